"""Datasets: obtain, verify and prepare them as one compact in-memory artifact.

Every dataset becomes the same thing: samples (uint8 images (N, C, H, W), or float32
feature vectors (N, D) for tables and arrays), int64 labels (-1 everywhere when the
data has none), an id per sample, and a fixed train/test split, saved in one ``.npz``.
Later stages load it once and keep tensors in memory, never per-item PIL images.

The torchvision datasets (``mnist``, ``fashion_mnist``, ``kmnist``) are read from,
in order: a local mirror in torchvision's layout (``<mirror>/MNIST/raw/...``), a
cache that an earlier download filled, or the official sources. Every raw file is
verified against a published checksum before it is parsed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latentlab.choices import DATASETS, FILE_DATASETS, TORCHVISION_DATASETS
from latentlab.errors import DataError
from latentlab.files import save_npz

MIRROR_ENV = "LATENTLAB_DATA_MIRROR"
CACHE_ENV = "LATENTLAB_CACHE"

# sha256 of the *uncompressed* files as published with MNIST (torchvision only
# publishes md5 of the .gz archives, which a mirror of extracted files lacks).
RAW_SHA256 = {
    "MNIST": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
}

NO_LABEL = -1


class UnverifiedDataWarning(UserWarning):
    """A raw file was read with no published checksum to compare it to."""


@dataclass
class Prepared:
    """A prepared dataset. Samples are uint8 images (N, C, H, W) or float32 features
    (N, D); labels int64 (N,), all ``NO_LABEL`` for unlabelled data; ids str (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    meta: dict = field(default_factory=dict)
    ids_train: np.ndarray | None = None
    ids_test: np.ndarray | None = None
    rows_train: np.ndarray | None = None  # each sample's position in the source file
    rows_test: np.ndarray | None = None

    def __post_init__(self) -> None:
        n_train, n = len(self.x_train), len(self.x_train) + len(self.x_test)
        if self.rows_train is None:  # the built-in datasets: train split first
            self.rows_train, self.rows_test = np.arange(n_train), np.arange(n_train, n)
        if self.ids_train is None:
            self.ids_train, self.ids_test = self.rows_train.astype(str), self.rows_test.astype(str)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) for images, (D,) for feature vectors."""
        return tuple(self.x_train.shape[1:])

    @property
    def is_images(self) -> bool:
        return self.x_train.ndim == 4

    @property
    def labelled(self) -> bool:
        return bool((self.y_train != NO_LABEL).any())

    def ids(self, protocol: str) -> tuple[np.ndarray, np.ndarray]:
        """The scored samples' ids and source-file positions, in the order ``split`` gives them."""
        if protocol == "all":
            return np.concatenate([self.ids_train, self.ids_test]), np.concatenate([self.rows_train, self.rows_test])
        return self.ids_test, self.rows_test

    def save(self, path: str | Path) -> None:
        """Write atomically: a crash never leaves a truncated artifact behind."""
        save_npz(path, x_train=self.x_train, y_train=self.y_train, x_test=self.x_test,
                 y_test=self.y_test, ids_train=self.ids_train, ids_test=self.ids_test,
                 rows_train=self.rows_train, rows_test=self.rows_test,
                 meta=np.array(json.dumps(self.meta, sort_keys=True)))

    @classmethod
    def load(cls, path: str | Path) -> "Prepared":
        path = Path(path)
        if not path.exists():
            raise DataError(f"prepared dataset {path} does not exist: run the download stage first "
                            "(`dvc repro download`)")
        with np.load(path, allow_pickle=False) as z:
            ids = tuple(z[k] if k in z.files else None for k in ("ids_train", "ids_test", "rows_train", "rows_test"))
            return cls(z["x_train"], z["y_train"], z["x_test"], z["y_test"], json.loads(str(z["meta"])), *ids)

    def split(self, protocol: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x_fit, y_fit, x_score, y_score) for a protocol.

        ``all``: fit and score on every image (train + test), as the published
        clustering tables do; labels are used only to score. ``train_test``: fit on
        the train split, score on the held-out test split.
        """
        if protocol == "all":
            x = np.concatenate([self.x_train, self.x_test])
            y = np.concatenate([self.y_train, self.y_test])
            return x, y, x, y
        return self.x_train, self.y_train, self.x_test, self.y_test


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_cache() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "latentlab")


def resolve_mirror(configured: str | None) -> Path | None:
    """The mirror folder: the config key wins over the environment variable."""
    value = configured or os.environ.get(MIRROR_ENV) or None
    if value is None:
        return None
    from latentlab.config import project_root

    # Relative to the project root, not the working directory: DVC runs queued
    # experiments in a copy under .dvc/tmp/exps/, where ../shared would miss.
    path = (project_root() / Path(value).expanduser()).resolve()
    if not path.is_dir():
        source = "data.mirror" if configured else MIRROR_ENV
        raise DataError(f"{source}={value!r} is not a directory; expected a folder in torchvision's "
                        "layout, e.g. <mirror>/MNIST/raw/train-images-idx3-ubyte")
    return path


def _raw_names(cls) -> list[tuple[str, str]]:
    """(uncompressed file name, md5 of its .gz) for each file torchvision expects."""
    return [(name.removesuffix(".gz"), md5) for name, md5 in cls.resources]


def _verify_raw(raw: Path, folder: str, cls) -> dict[str, str]:
    """Check every raw file against its published checksum; return their sha256."""
    known = RAW_SHA256.get(folder, {})
    digests = {}
    for name, gz_md5 in _raw_names(cls):
        path = raw / name
        if not path.exists():
            raise DataError(f"missing file {path}; expected the four files of {folder} in "
                            f"torchvision's layout under {raw}")
        digest = sha256_file(path)
        if name in known and digest != known[name]:
            raise DataError(f"{path} is corrupt or truncated: sha256 {digest}, expected {known[name]} "
                            f"({path.stat().st_size} bytes). Delete it and download again.")
        if name not in known:
            gz = raw / f"{name}.gz"
            if gz.exists():
                actual = md5_file(gz)
                if actual != gz_md5:
                    raise DataError(f"{gz} is corrupt or truncated: md5 {actual}, expected {gz_md5}")
                with gzip.open(gz, "rb") as f:
                    if hashlib.sha256(f.read()).hexdigest() != digest:
                        raise DataError(f"{path} does not match its verified archive {gz}; "
                                        "delete it and download again")
            else:
                warnings.warn(f"{path}: no published checksum for the uncompressed file and no .gz "
                              "archive beside it; only its structure is checked",
                              UnverifiedDataWarning, stacklevel=2)
        digests[name] = digest
    return digests


def _fetch_official(cls, tmp: Path) -> None:
    """torchvision's own download: tries each official source, checks each archive's md5."""
    folder = cls.__name__
    try:
        cls(root=str(tmp), train=True, download=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        bad = [f"{name} (md5 {md5_file(gz)}, expected {md5})" for name, md5 in cls.resources
               if (gz := tmp / folder / "raw" / name).exists() and md5_file(gz) != md5]
        if bad:
            raise DataError("downloaded files are corrupt: " + "; ".join(bad)) from err
        raise DataError(
            f"could not download {folder} from {', '.join(cls.mirrors)}: {err}.\n"
            f"With no internet, point {MIRROR_ENV} (or data.mirror) at a folder in torchvision's "
            f"layout, e.g. `export {MIRROR_ENV}=../shared/datasets` holding {folder}/raw/, "
            "or use the offline dataset: `data=digits`."
        ) from err


def _verify_archive(gz: Path, md5: str, folder: str) -> None:
    """A mirror's .gz is good if it is torchvision's archive byte for byte (its md5) or, since
    a distribution may re-compress the same content, if what it decompresses to has the
    published sha256 of the uncompressed file. The error says which check failed."""
    actual = md5_file(gz)
    if actual == md5:
        return
    name = gz.name.removesuffix(".gz")
    known = RAW_SHA256.get(folder, {}).get(name)
    if known is None:
        raise DataError(f"{gz}: md5 {actual}, expected {md5} (torchvision's archive), and no checksum of the "
                        f"uncompressed {name} is published to check a re-compressed archive against: "
                        "corrupt, truncated or not the original archive")
    try:
        with gzip.open(gz, "rb") as f:
            h = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except (OSError, EOFError) as err:
        raise DataError(f"{gz} does not decompress ({err}): corrupt or truncated "
                        f"(its md5 {actual} is not torchvision's {md5} either)") from None
    if h.hexdigest() != known:
        raise DataError(f"{gz} decompresses to content with sha256 {h.hexdigest()}, expected {known} (the published "
                        f"{name}); its md5 {actual} is not torchvision's {md5} either: corrupt or truncated")


def _extract_mirror(cls, mirror: Path, tmp: Path) -> None:
    """Verify and extract the .gz archives of a mirror (never written to) into tmp."""
    from torchvision.datasets.utils import extract_archive

    folder = cls.__name__
    src = mirror / folder / "raw"
    for name, md5 in cls.resources:
        gz = src / name
        if not gz.exists():
            raise DataError(f"the mirror lacks {gz} (and its uncompressed form); expected the four "
                            f"files of {folder} in torchvision's layout under {src}")
        _verify_archive(gz, md5, folder)
        (tmp / folder / "raw").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(gz, tmp / folder / "raw" / name)
        extract_archive(str(tmp / folder / "raw" / name))


def _download(cls, cache: Path, mirror: Path | None) -> None:
    """Fill ``cache/<folder>/raw`` from the mirror's archives or the official sources.

    Everything lands in a temporary folder first, so an interrupted download never
    looks like a complete one.
    """
    folder = cls.__name__
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        if mirror is not None:
            _extract_mirror(cls, mirror, Path(tmp))
        else:
            _fetch_official(cls, Path(tmp))
        target = cache / folder / "raw"
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(Path(tmp) / folder / "raw", target)


def _parse_idx(cls, root: Path, train: bool, raw: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        ds = cls(root=str(root), train=train, download=False)
    except (RuntimeError, ValueError, AssertionError, OSError) as err:
        raise DataError(f"could not parse the IDX files in {raw}: {err!r}; expected the original "
                        f"{cls.__name__} files") from err
    x, y = ds.data.numpy(), ds.targets.numpy().astype(np.int64)
    split = "train" if train else "t10k"
    if x.ndim != 3 or len(x) != len(y):
        raise DataError(f"{raw}: {split} has {len(x)} images of shape {x.shape[1:]} but {len(y)} labels; "
                        f"expected one label per image in the original {cls.__name__} files")
    n_classes = len(cls.classes)
    bad = np.flatnonzero((y < 0) | (y >= n_classes))
    if len(bad):
        raise DataError(f"{raw}: {split} label {int(y[bad[0]])} at index {int(bad[0])} ({len(bad)} such) is "
                        f"outside {cls.__name__}'s classes 0..{n_classes - 1}")
    return x[:, None], y


def load_torchvision(name: str, mirror: Path | None, cache: Path) -> Prepared:
    import torchvision.datasets as tvd

    folder = TORCHVISION_DATASETS[name]
    cls = getattr(tvd, folder)
    names = [n for n, _ in _raw_names(cls)]
    if mirror is not None and all((mirror / folder / "raw" / n).exists() for n in names):
        root = mirror  # read in place; a mirror is never written to
    else:
        root = cache
        if not all((cache / folder / "raw" / n).exists() for n in names):
            if mirror is not None and not (mirror / folder / "raw").is_dir():
                raise DataError(f"the mirror {mirror} has no {folder}/raw/ folder; expected "
                                f"{mirror / folder / 'raw'} holding {', '.join(names)} (or their .gz)")
            _download(cls, cache, mirror)
    raw = root / folder / "raw"
    digests = _verify_raw(raw, folder, cls)
    x_train, y_train = _parse_idx(cls, root, True, raw)
    x_test, y_test = _parse_idx(cls, root, False, raw)
    meta = {"dataset": name, "source": str(raw), "files_sha256": digests}
    return Prepared(x_train, y_train, x_test, y_test, meta)


def load_digits(test_fraction: float, seed: int, size: int | None = None) -> Prepared:
    """scikit-learn's bundled 8x8 digits (1,797 images), fully offline. ``size=28``: each
    digit upsampled (bilinear) to 20x20 and centred in a 28x28 frame, as MNIST's are: a
    second 28x28 image set, other writers and scans, on which the image defaults
    (model=conv, its epochs) can be checked against data they were not chosen on."""
    import torch
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    if size is None:
        # Pixel values are 0..16: rescale to the 0..255 range the other datasets use.
        x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    else:
        inner = size * 20 // 28
        up = torch.nn.functional.interpolate(torch.tensor(bunch.images[:, None] / 16.0, dtype=torch.float32),
                                             size=(inner, inner), mode="bilinear", align_corners=False)
        lo = (size - inner) // 2
        up = torch.nn.functional.pad(up, (lo, size - inner - lo, lo, size - inner - lo)) * 255.0
        x = np.rint(up.clamp(0, 255).numpy()).astype(np.uint8)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    name = "digits" if size is None else f"digits{size}"
    return Prepared(x_tr, y_tr, x_te, y_te, {"dataset": name, "source": "sklearn.datasets.load_digits"
                                             + ("" if size is None else f", upsampled to {size}x{size}")})


def load_file(name: str, d: dict, test_fraction: float, seed: int) -> Prepared:
    """The user's own data (``data.name`` table | array | images at ``data.path``), split
    into train/test (stratified when labelled); feature vectors scaled by a ``Scaler``
    fitted on the training split only, constant feature columns dropped (and logged)."""
    from sklearn.model_selection import train_test_split

    from latentlab import sources
    from latentlab.config import project_root

    path = project_root() / Path(d["path"]).expanduser()
    if name == "table":
        src = sources.read_table(path, features=d["features"], label=d["label"], id=d["id"])
    elif name == "array":
        src = sources.read_array(path, key=d["key"], label_key=d["label_key"])
    else:
        src = sources.read_image_folder(path, size=d["size"], channels=d["channels"])
    n = len(src.x)
    n_test = int(round(test_fraction * n))
    if n - n_test < 2 or n_test < 1:
        raise DataError(f"{path} has {n} samples: too few to split into train and test "
                        f"(data.test_fraction={test_fraction})")
    y = src.y if src.y is not None else np.full(n, NO_LABEL, dtype=np.int64)
    stratify = y if src.y is not None and np.bincount(y).min() >= 2 else None
    idx_train, idx_test = train_test_split(np.arange(n), test_size=n_test, random_state=seed, stratify=stratify)
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    meta = {"dataset": name, "source": str(path), "labelled": src.y is not None, "classes": src.meta["classes"],
            "file_sha256": sha256_file(path) if path.is_file() else None}
    x = src.x
    if x.ndim == 2:
        x, columns, dropped = sources.drop_constant(x, src.meta["columns"])
        if dropped:
            print(f"  dropped {len(dropped)} constant feature column(s): {dropped}", flush=True)
        scaler = sources.Scaler.fit(d["scaling"], x[idx_train])
        x = scaler.transform(x)
        meta.update(columns=columns, dropped_columns=dropped, scaler=scaler.to_dict())
    return Prepared(x[idx_train], y[idx_train], x[idx_test], y[idx_test], meta,
                    src.ids[idx_train], src.ids[idx_test], idx_train, idx_test)


def _head(ds: Prepared, split: str, n: int | None) -> None:
    if n is not None:
        for attr in ("x", "y", "ids", "rows"):
            setattr(ds, f"{attr}_{split}", getattr(ds, f"{attr}_{split}")[:n])


def prepare(name: str, *, mirror: str | None = None, cache: str | None = None,
            max_train: int | None = None, max_test: int | None = None,
            test_fraction: float = 0.2, seed: int = 0, source: dict | None = None) -> Prepared:
    """Obtain, verify and prepare a dataset. ``max_*`` keep the first n of a split.
    ``source``: the ``data`` config node, for the file datasets."""
    if name not in DATASETS:
        raise DataError(f"data.name must be one of {list(DATASETS)}, got {name!r}")
    if name in ("digits", "digits28"):
        ds = load_digits(test_fraction, seed, size=28 if name == "digits28" else None)
    elif name in FILE_DATASETS:
        ds = load_file(name, dict(source or {}), test_fraction, seed)
    else:
        ds = load_torchvision(name, resolve_mirror(mirror), Path(cache).expanduser() if cache else default_cache())
    _head(ds, "train", max_train)
    _head(ds, "test", max_test)
    h = hashlib.sha256()
    for arr in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        h.update(np.ascontiguousarray(arr).tobytes())
    ds.meta.setdefault("labelled", True)
    ds.meta.update(sha256=h.hexdigest(), n_train=len(ds.x_train), n_test=len(ds.x_test),
                   image_shape=list(ds.image_shape),
                   n_classes=int(len(np.unique(ds.y_train))) if ds.labelled else None)
    return ds
