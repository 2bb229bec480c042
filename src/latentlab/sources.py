"""The user's own data: a table (CSV / Parquet), a NumPy array file, a folder of images.

Each reader returns a ``Source``: the samples, their labels when the data has them,
and an id per sample, in the file's order. Everything a reader can find wrong with a
file (missing, unreadable, non-numeric, NaN, absent column, mixed image sizes) is a
``DataError`` naming the file and the value, raised before any training.

Shapes: tables and 2-D arrays give float feature vectors (N, D); image folders and
3-D/4-D uint8 arrays give uint8 images (N, C, H, W).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latentlab.choices import SCALINGS, check
from latentlab.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class Source:
    x: np.ndarray                    # (N, D) float64 features or (N, C, H, W) uint8 images
    y: np.ndarray | None             # (N,) int64 class indices, or None: the data has no labels
    ids: np.ndarray                  # (N,) str: the id column, file names, or the row number
    meta: dict = field(default_factory=dict)


def _exists(path: Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data.path={str(path)!r} does not exist; expected {what}")
    return path


def _encode_labels(values: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """Any label values (N,) -> int64 indices (N,) and the class names, sorted as numbers
    when every value is one (1, 2, 10; not "1", "10", "2"), else as text."""
    if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in values):
        raise DataError(f"{where} has missing values; every row needs a label (or set the label to null)")
    text = np.asarray(values).astype(str)
    try:
        numbers = text.astype(np.float64)
    except ValueError:
        names, y = np.unique(text, return_inverse=True)
        return y.astype(np.int64), [str(n) for n in names]
    order, y = np.unique(numbers, return_inverse=True)
    first = {v: t for v, t in zip(numbers[::-1], text[::-1])}  # each number as the file first wrote it
    return y.astype(np.int64), [str(first[v]) for v in order]


def _pick_columns(columns: list[str], patterns: list[str] | None, exclude: set[str], where: str) -> list[str]:
    if patterns is None:
        return [c for c in columns if c not in exclude]
    picked: list[str] = []
    for pat in patterns:
        hits = [c for c in columns if fnmatch.fnmatchcase(c, str(pat)) and c not in exclude]
        if not hits:
            raise DataError(f"data.features: {pat!r} matches no column of {where}; its columns are {columns}")
        picked += [c for c in hits if c not in picked]
    return picked


def read_table(path: str | Path, *, features: list[str] | None = None, label: str | None = None,
               id: str | None = None) -> Source:
    """A CSV or Parquet file, one row per sample. ``features``: column names or glob
    patterns (``"pixel_*"``); None takes every column but the label and id columns."""
    import pandas as pd

    path = _exists(path, "a .csv or .parquet file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix in (".csv", ".tsv", ".txt"):
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        else:
            raise DataError(f"data.path={str(path)!r}: unknown table format {suffix!r}; expected .csv, .tsv "
                            "or .parquet")
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise DataError(f"could not read {path} as a table: {err}") from err
    columns = [str(c) for c in df.columns]
    df.columns = columns
    for key, col in (("data.label", label), ("data.id", id)):
        if col is not None and col not in columns:
            raise DataError(f"{key}={col!r} is not a column of {path}; its columns are {columns}")
    names = _pick_columns(columns, features, {c for c in (label, id) if c is not None}, str(path))
    if not names:
        raise DataError(f"{path} has no feature columns besides the label/id columns")
    bad = [c for c in names if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])]
    if features is None:
        # Unnamed features: a column of text (names, categories) is no feature and is left
        # out, said aloud; a column of numbers with some text in it is an error below.
        text = [c for c in bad if pd.to_numeric(df[c], errors="coerce").notna().mean() < 0.5]
        if text:
            print(f"  {path.name}: left out non-numeric column(s) {text}; name the features with data.features",
                  flush=True)
        names = [c for c in names if c not in text]
        bad = [c for c in bad if c not in text]
        if not names:
            raise DataError(f"{path} has no numeric feature columns (columns: {columns})")
    if bad:
        c = bad[0]
        example = next((v for v in df[c] if pd.isna(pd.to_numeric(v, errors="coerce"))), df[c].iloc[0])
        raise DataError(f"feature column {c!r} of {path} is not numeric (e.g. {example!r}); choose numeric "
                        f"columns with data.features (non-numeric: {bad})")
    x = df[names].to_numpy(dtype=np.float64)
    if np.isnan(x).any():
        rows, cols = np.nonzero(np.isnan(x))
        raise DataError(f"{path} has {len(rows)} missing (NaN) values in its feature columns, first in column "
                        f"{names[cols[0]]!r} at row {rows[0]}; fill or drop them first")
    if not np.isfinite(x).all():
        raise DataError(f"{path} has infinite values in its feature columns")
    y, classes = (None, None) if label is None else _encode_labels(df[label].to_numpy(), f"label column {label!r}")
    ids = np.asarray(df[id].astype(str), dtype=str) if id is not None else np.arange(len(df)).astype(str)
    if id is not None and len(set(ids)) != len(ids):
        raise DataError(f"data.id={id!r}: the ids in {path} are not unique")
    return Source(x, y, ids, {"columns": names, "classes": classes})


def read_array(path: str | Path, *, key: str = "x", label_key: str | None = None) -> Source:
    """A .npy file (the samples) or a .npz archive (samples under ``key``, labels under
    ``label_key``). 2-D: feature vectors; 3-D (N, H, W) / 4-D (N, C, H, W) uint8: images."""
    path = _exists(path, "a .npy or .npz file")
    try:
        if path.suffix.lower() == ".npy":
            arrays = {key: np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"could not read {path} as a NumPy file: {err}") from err
    if key not in arrays:
        raise DataError(f"data.key={key!r} is not in {path}; it holds {sorted(arrays)}")
    x = arrays[key]
    if label_key is not None and label_key not in arrays:
        raise DataError(f"data.label_key={label_key!r} is not in {path}; it holds {sorted(arrays)}")
    if x.ndim == 2:
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"{path}[{key!r}] has dtype {x.dtype}; expected numbers")
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise DataError(f"{path}[{key!r}] has NaN or infinite values")
    elif x.ndim in (3, 4):
        if x.dtype != np.uint8:
            raise DataError(f"{path}[{key!r}]: images of shape {x.shape} must be uint8 (0-255), got {x.dtype}")
        x = x[:, None] if x.ndim == 3 else x
    else:
        raise DataError(f"{path}[{key!r}] has shape {x.shape}; expected (N, D) features or (N, H, W) / "
                        "(N, C, H, W) uint8 images")
    y = classes = None
    if label_key is not None:
        if len(arrays[label_key]) != len(x):
            raise DataError(f"{path}: {len(x)} samples but {len(arrays[label_key])} labels")
        y, classes = _encode_labels(arrays[label_key], f"{path}[{label_key!r}]")
    meta = {"columns": [f"x{i}" for i in range(x.shape[1])] if x.ndim == 2 else None, "classes": classes}
    return Source(x, y, np.arange(len(x)).astype(str), meta)


def read_image_folder(path: str | Path, *, size: list[int] | None = None, channels: int = 1) -> Source:
    """A folder of images: one subfolder per class (labelled), or images directly in it
    (unlabelled). Converted to ``channels`` (1: grayscale, 3: RGB) and resized to ``size``
    [H, W]; with size null every image must already share one size."""
    from PIL import Image, UnidentifiedImageError

    root = _exists(path, "a folder of images (one subfolder per class, or a flat folder)")
    if not root.is_dir():
        raise DataError(f"data.path={str(root)!r} is not a folder")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        files = [(f, d.name) for d in subdirs for f in sorted(d.iterdir())
                 if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [(f, None) for f in sorted(root.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)}), directly or in class subfolders")
    mode = {1: "L", 3: "RGB"}[channels]
    images, unreadable, shapes = [], [], {}
    for f, _ in files:
        try:
            with Image.open(f) as im:
                im = im.convert(mode)
                shapes.setdefault(im.size, f)
                if size is not None:
                    im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                images.append(np.asarray(im, dtype=np.uint8))
        except (UnidentifiedImageError, OSError) as err:
            unreadable.append(f"{f.relative_to(root)} ({type(err).__name__})")
    if unreadable:
        raise DataError(f"{len(unreadable)} unreadable image file(s) in {root}: {', '.join(unreadable[:5])}"
                        + (" ..." if len(unreadable) > 5 else "") + "; remove or repair them")
    if size is None and len(shapes) > 1:
        (s1, f1), (s2, f2) = list(shapes.items())[:2]
        raise DataError(f"images in {root} have different sizes ({f1.name}: {s1[0]}x{s1[1]}, {f2.name}: "
                        f"{s2[0]}x{s2[1]}, {len(shapes)} sizes in all); set data.size: [H, W] to resize them")
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    y = classes = None
    if subdirs:
        y, classes = _encode_labels(np.array([c for _, c in files]), "class subfolders")
    ids = np.array([str(f.relative_to(root)) for f, _ in files])
    return Source(x, y, ids, {"columns": None, "classes": classes})


def drop_constant(x: np.ndarray, columns: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """Feature columns with a single value carry nothing and break scaling: drop them
    (the caller logs which). (N, D) -> (N, D'), kept names, dropped names."""
    const = np.ptp(x, axis=0) == 0
    if const.all():
        raise DataError(f"every feature column is constant ({columns}); nothing to learn from")
    return x[:, ~const], [c for c, k in zip(columns, const) if not k], [c for c, k in zip(columns, const) if k]


@dataclass
class Scaler:
    """Feature scaling fitted on the training split: x' = (x - center) / scale."""

    kind: str
    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, kind: str, x: np.ndarray) -> "Scaler":
        check("data.scaling", kind, SCALINGS)
        d = x.shape[1]
        if kind == "standard":
            center, scale = x.mean(0), x.std(0)
        elif kind == "minmax":
            center, scale = x.min(0), np.ptp(x, axis=0)
        else:
            center, scale = np.zeros(d), np.ones(d)
        return cls(kind, center, np.where(scale > 0, scale, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.center) / self.scale).astype(np.float32)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "center": self.center.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Scaler":
        return cls(d["kind"], np.asarray(d["center"], dtype=np.float64), np.asarray(d["scale"], dtype=np.float64))
