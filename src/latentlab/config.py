"""Configuration: compose it from ``conf/``, load ``params.yaml``, validate it in one place.

``conf/`` is the source of truth; ``params.yaml`` is its composed default (DVC
rewrites it on ``dvc exp run``). Stages read ``params.yaml`` because plain
``dvc repro`` does not compose.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from latentlab.choices import (ACTIVATIONS, ALGORITHMS, ANOMALY_PROTOCOLS, ANOMALY_SCORES, ASSIGN_REST,
                               AUGMENT_TARGETS, CLASSES, DATASETS, EXPORT_METHODS, FILE_DATASETS,
                               FINETUNE_SCHEDULES, FINETUNE_TARGETS, INPUT_DIMS, MANIFOLDS, MODELS, OPTIMIZERS,
                               PROTOCOLS, ANOMALY_ERRORS, IMAGE_ONLY_ERRORS, VECTOR_DATASETS, SCALINGS, SELECT_K, TASKS, THRESHOLDS, check)
from latentlab.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

def project_root(start: str | Path | None = None) -> Path:
    """The repository root: the nearest folder holding dvc.yaml.

    Queued DVC experiments run in a copy under ``<root>/.dvc/tmp/exps/``; their runs
    still belong in the user's store, so the copy resolves to the real root (DVC
    also says so in ``$DVC_ROOT``).
    """
    import os

    if start is None and os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    parts = here.parts
    if ".dvc" in parts:
        i = parts.index(".dvc")
        if parts[i + 1:i + 3] == ("tmp", "exps"):
            return Path(*parts[:i])
    for p in (here, *here.parents):
        if (p / "dvc.yaml").exists():
            return p
    return here


def compose(overrides: list[str] | None = None, config_dir: str | Path = CONF_DIR) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides, as DVC does for ``params.yaml``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides or []))


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read and validate ``params.yaml``; returns plain containers."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist; run from the project root")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    validate(cfg)
    return cfg


def _get(cfg: Mapping[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"missing config key {key!r}")
        node = node[part]
    return node


def _int(cfg, key: str, lo: int, hi: int | None = None, optional: bool = False) -> int | None:
    v = _get(cfg, key)
    if v is None and optional:
        return None
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
    if not ok:
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{key} must be an int {rng}{' or null' if optional else ''}, got {v!r}")
    return v


def _float(cfg, key: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> float:
    v = _get(cfg, key)
    ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and (v > lo if lo_open else v >= lo)
          and (v < hi if hi_open else v <= hi))
    if not ok:
        raise ConfigError(f"{key} must be a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, "
                          f"got {v!r}")
    return float(v)


def _choice(cfg, key: str, choices) -> Any:
    return check(key, _get(cfg, key), choices)


def _int_list(cfg, key: str) -> list[int]:
    v = _get(cfg, key)
    if not isinstance(v, (list, tuple, ListConfig)) or not v or not all(
            isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
        raise ConfigError(f"{key} must be a non-empty list of positive ints, got {v!r}")
    return list(v)


def _classes(cfg, key: str, dataset: str) -> list[int]:
    v = _get(cfg, key)
    if v is None and key.endswith("normal"):
        return None  # the most frequent class (anomaly_plan)
    if dataset not in CLASSES:  # a file dataset: its classes are checked once it is read
        if not isinstance(v, (list, tuple, ListConfig)) or not v or not all(
                isinstance(c, (int, str)) and not isinstance(c, bool) and c != "" for c in v):
            raise ConfigError(f"{key} must be null or a non-empty list of label values or class indices, got {v!r}")
        return list(v)
    known = CLASSES[dataset]
    if not isinstance(v, (list, tuple, ListConfig)) or not v or not all(
            isinstance(c, int) and not isinstance(c, bool) and c in known for c in v):
        raise ConfigError(f"{key} must be a non-empty list of {dataset} classes {known}, got {v!r}")
    if len(set(v)) == len(known):
        raise ConfigError(f"{key}={list(v)} covers every {dataset} class: nothing would be "
                          f"{'anomalous' if key.endswith('normal') else 'normal'}")
    return list(v)


def _str_or_null(cfg, key: str) -> str | None:
    v = _get(cfg, key)
    if v is not None and (not isinstance(v, str) or not v.strip()):
        raise ConfigError(f"{key} must be a column name or null, got {v!r}")
    return v


def _validate_source(cfg, name: str) -> None:
    """The file datasets' keys (data=table | array | images); the file itself is checked
    when the download stage reads it."""
    path = _get(cfg, "data.path")
    if not isinstance(path, str) or not path.strip() or path == "set-data.path-to-your-file":
        what = {"table": "a .csv or .parquet file", "array": "a .npy or .npz file",
                "images": "a folder of images"}.get(name, "a path")
        raise ConfigError(f"data.path must name {what} (e.g. -S data.path=my_data.csv), got {path!r}")
    if name not in FILE_DATASETS:
        return
    if name == "table":
        feats = _get(cfg, "data.features")
        if feats is not None and (not isinstance(feats, (list, tuple, ListConfig)) or not feats
                                  or not all(isinstance(f, str) and f for f in feats)):
            raise ConfigError(f"data.features must be null or a non-empty list of column names/patterns, got {feats!r}")
        label, ident = _str_or_null(cfg, "data.label"), _str_or_null(cfg, "data.id")
        if label is not None and label == ident:
            raise ConfigError(f"data.label and data.id name the same column {label!r}")
    if name == "array":
        if not isinstance(_get(cfg, "data.key"), str):
            raise ConfigError(f"data.key must be the samples' key in the .npz, got {_get(cfg, 'data.key')!r}")
        _str_or_null(cfg, "data.label_key")
    if name in ("table", "array"):
        _choice(cfg, "data.scaling", SCALINGS)
    if name == "images":
        size = _get(cfg, "data.size")
        if size is not None and (not isinstance(size, (list, tuple, ListConfig)) or len(size) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 4 for v in size)):
            raise ConfigError(f"data.size must be null or [H, W] with both >= 4, got {size!r}")
        _choice(cfg, "data.channels", (1, 3))


def check_cnn_fits(channels, h: int, w: int) -> None:
    """The self-labelling CNN halves the image per conv block (``finetune.channels``): images
    of h x w must hold all its blocks. Shared by validation and ``finetune.ConvNet``."""
    scale = 2 ** len(channels)
    if h < scale or w < scale:
        raise ConfigError(f"finetune.channels={list(channels)}: {len(channels)} pooling blocks need images of at "
                          f"least {scale}x{scale}, got {h}x{w}")


def _validate_cnn(cfg, dataset: str, channels: list[int]) -> None:
    """Fail here, not after training, when the images (a built-in dataset's, or data.size)
    are known and too small for the raw twin's CNN; other sizes are checked when it is built."""
    if dataset in INPUT_DIMS:
        side = math.isqrt(INPUT_DIMS[dataset])
        check_cnn_fits(channels, side, side)
    elif dataset == "images" and _get(cfg, "data.size") is not None:
        check_cnn_fits(channels, *_get(cfg, "data.size"))


def _validate_anomaly(cfg, dataset: str) -> None:

    protocol = _choice(cfg, "anomaly.protocol", ANOMALY_PROTOCOLS)
    if protocol == "unsupervised":
        for key in ("anomaly.normal", "anomaly.anomalous"):
            if _get(cfg, key) is not None:
                raise ConfigError(f"{key} must be null under protocol unsupervised (no labels say which "
                                  f"classes are normal), got {_get(cfg, key)!r}")
    else:
        listed, rest = ("normal", "anomalous") if protocol == "one_class" else ("anomalous", "normal")
        _classes(cfg, f"anomaly.{listed}", dataset)
        if _get(cfg, f"anomaly.{rest}") is not None:
            raise ConfigError(f"anomaly.{rest} must be null under protocol {protocol} (it is every class not in "
                              f"anomaly.{listed}), got {_get(cfg, f'anomaly.{rest}')!r}")
    if _get(cfg, "anomaly.anomaly_fraction") is not None:
        _float(cfg, "anomaly.anomaly_fraction", 0.0, 0.5, lo_open=True)
    _int(cfg, "anomaly.draws", 1, 1000)
    _int(cfg, "anomaly.max_epochs", 1)
    _int(cfg, "anomaly.min_steps", 0)
    _validate_model(cfg, "anomaly.model", dataset)
    _int(cfg, "anomaly.latent_dim", 1, optional=True)
    hidden = _get(cfg, "anomaly.hidden")
    if hidden is not None and hidden != "auto":
        _int_list(cfg, "anomaly.hidden")
    _float(cfg, "anomaly.train_contamination", 0.0, 0.5, hi_open=True)
    _float(cfg, "anomaly.val_fraction", 0.0, 0.5, lo_open=True, hi_open=True)
    error = _choice(cfg, "anomaly.error", ANOMALY_ERRORS)
    if error in IMAGE_ONLY_ERRORS and dataset in VECTOR_DATASETS:
        raise ConfigError(f"anomaly.error={error} compares images, but data.name={dataset} gives feature "
                          "vectors: use anomaly.error=auto, mse or max")
    _choice(cfg, "anomaly.score", ANOMALY_SCORES)
    _int(cfg, "anomaly.k", 1, 1000)
    _choice(cfg, "anomaly.threshold", THRESHOLDS)
    _float(cfg, "anomaly.target_fpr", 0.0, 1.0, lo_open=True, hi_open=True)
    _float(cfg, "anomaly.recall_at_fpr", 0.0, 1.0, lo_open=True, hi_open=True)
    _float(cfg, "anomaly.percentile", 0.0, 100.0, lo_open=True, hi_open=True)
    _int(cfg, "anomaly.n_images", 1, 64)


def _validate_manifold(cfg) -> None:

    _choice(cfg, "cluster.manifold", MANIFOLDS)
    _int(cfg, "cluster.umap.n_components", 1, 100)
    _int(cfg, "cluster.umap.n_neighbors", 2, 1000)
    _int(cfg, "cluster.umap.n_epochs", 1, 10_000, optional=True)
    _float(cfg, "cluster.umap.min_dist", 0.0, 1.0)
    _choice(cfg, "cluster.umap.metric", ("euclidean", "cosine", "manhattan", "correlation"))
    _choice(cfg, "cluster.algorithm", ALGORITHMS)
    _choice(cfg, "cluster.covariance_type", ("full", "tied", "diag", "spherical"))
    _int(cfg, "cluster.minibatch_above", 1)

    if _get(cfg, "cluster.select_k") is not None:
        _choice(cfg, "cluster.select_k", SELECT_K)
    kr = _get(cfg, "cluster.k_range")
    if not (isinstance(kr, (list, tuple, ListConfig)) and len(kr) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in kr) and 2 <= kr[0] <= kr[1]):
        raise ConfigError(f"cluster.k_range must be [lo, hi] with 2 <= lo <= hi, got {kr!r}")
    _choice(cfg, "cluster.assign_rest", ASSIGN_REST)
    max_fit = _int(cfg, "cluster.max_fit", 1)
    least = _get(cfg, "cluster.k") or kr[0]
    if max_fit < least:
        raise ConfigError(f"cluster.max_fit={max_fit} must be at least the least k, {least} (cluster.k, or "
                          "cluster.k_range's low end)")


def _validate_model(cfg, key: str, dataset: str | None) -> int:
    """An autoencoder section (``model``, or the anomaly branch's ``anomaly.model``), checked
    against ``dataset`` (None: not at all); its latent_dim."""
    group = "model" if key == "model" else f"model@{key}"  # the Hydra override that picks it
    target = _get(cfg, f"{key}._target_")
    if target not in MODELS:
        raise ConfigError(f"{key}._target_ must be one of {list(MODELS)} ({group}=mlp or {group}=conv), "
                          f"got {target!r}")
    latent = _int(cfg, f"{key}.latent_dim", 1)
    _float(cfg, f"{key}.input_dropout", 0.0, 0.95)
    if MODELS[target] == "mlp":
        if _get(cfg, f"{key}.hidden") != "auto":
            _int_list(cfg, f"{key}.hidden")
    else:
        _int_list(cfg, f"{key}.channels")
        if _get(cfg, f"{key}.decoder_hidden") is not None:
            _int_list(cfg, f"{key}.decoder_hidden")
        if dataset == "table":
            raise ConfigError(f"{group}=conv needs images, but data.name=table gives feature vectors; "
                              f"use {group}=mlp")
    _choice(cfg, f"{key}.activation", ACTIVATIONS)
    return latent


def validate(cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError naming the first invalid key and its value."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    _int(cfg, "seed", 0)
    _choice(cfg, "task", TASKS)
    _choice(cfg, "protocol", PROTOCOLS)

    name = _choice(cfg, "data.name", DATASETS)
    _validate_source(cfg, name)
    _int(cfg, "data.max_train", 1, optional=True)
    _int(cfg, "data.max_test", 1, optional=True)
    _float(cfg, "data.test_fraction", 0.0, 0.9, lo_open=True)
    _int(cfg, "data.split_seed", 0)

    # `latentlab task=anomaly` never builds `model` (the anomaly branch has its own): its
    # architecture need not suit the data there
    latent = _validate_model(cfg, "model", name if _get(cfg, "task") != "anomaly" else None)

    _choice(cfg, "optimizer._target_", OPTIMIZERS)
    _float(cfg, "optimizer.lr", 0.0, 10.0, lo_open=True)

    _int(cfg, "train.batch_size", 1)
    _int(cfg, "train.max_epochs", 1)
    _int(cfg, "train.min_steps", 0)
    _int(cfg, "train.budget_max_epochs", 1)
    _float(cfg, "train.val_fraction", 0.0, 0.5, lo_open=True)
    _int(cfg, "train.patience", 1)
    _float(cfg, "train.min_delta", 0.0, 1.0)
    _choice(cfg, "train.lr_schedule", ("constant", "cosine"))
    _float(cfg, "train.augment.degrees", 0.0, 180.0)
    _float(cfg, "train.augment.translate", 0.0, 0.5)
    _choice(cfg, "train.augment.target", AUGMENT_TARGETS)
    if not isinstance(_get(cfg, "trainer"), Mapping):
        raise ConfigError(f"trainer must be a mapping of Lightning Trainer arguments, got {cfg['trainer']!r}")

    _int(cfg, "cluster.k", 2, optional=True)
    _int(cfg, "cluster.n_init", 1)
    _int(cfg, "cluster.max_iter", 1)
    if not isinstance(_get(cfg, "cluster.standardize"), bool):
        raise ConfigError(f"cluster.standardize must be true or false, got {cfg['cluster']['standardize']!r}")
    pca = _get(cfg, "cluster.pca")
    if isinstance(pca, bool) or not (pca is None or isinstance(pca, (int, float))):
        raise ConfigError(f"cluster.pca must be null, an int or a float in (0, 1), got {pca!r}")
    if isinstance(pca, int) and not 1 <= pca <= latent:
        raise ConfigError(f"cluster.pca={pca} components must be in [1, model.latent_dim={latent}]")
    if isinstance(pca, float) and not 0.0 < pca < 1.0:
        raise ConfigError(f"cluster.pca={pca} as an explained-variance fraction must be in (0, 1)")
    _validate_manifold(cfg)
    _int(cfg, "finetune.rounds", 0, 20)
    _validate_cnn(cfg, name, _int_list(cfg, "finetune.channels"))
    _choice(cfg, "finetune.lr_schedule", FINETUNE_SCHEDULES)
    _choice(cfg, "finetune.targets", FINETUNE_TARGETS)
    _float(cfg, "finetune.label_smoothing", 0.0, 1.0, hi_open=True)
    _float(cfg, "finetune.recon_weight", 0.0, 1e6)
    _float(cfg, "finetune.ema", 0.0, 1.0, hi_open=True)
    _float(cfg, "finetune.mixup", 0.0, 100.0)
    if not isinstance(_get(cfg, "finetune.restart"), bool):
        raise ConfigError(f"finetune.restart must be true or false, got {cfg['finetune']['restart']!r}")
    _int(cfg, "finetune.epochs", 1)
    _int(cfg, "finetune.min_steps", 0)
    _int(cfg, "finetune.budget_max_epochs", 1)
    _float(cfg, "finetune.fraction", 0.0, 1.0, lo_open=True)
    _int(cfg, "finetune.neighbors", 1, 1000)
    _float(cfg, "finetune.lr", 0.0, 10.0, lo_open=True)
    _int(cfg, "finetune.batch_size", 1)
    _int(cfg, "finetune.views", 1, 64)
    _float(cfg, "finetune.augment.degrees", 0.0, 180.0)
    _float(cfg, "finetune.augment.translate", 0.0, 0.5)
    if not isinstance(_get(cfg, "dec.enabled"), bool):
        raise ConfigError(f"dec.enabled must be true or false, got {cfg['dec']['enabled']!r}")
    _int(cfg, "dec.steps", 1)
    _int(cfg, "dec.update", 1)
    _float(cfg, "dec.tol", 0.0, 1.0)
    _float(cfg, "dec.gamma", 0.0, 1e6)
    _float(cfg, "dec.lr", 0.0, 10.0, lo_open=True)
    _int(cfg, "dec.batch_size", 1)
    _float(cfg, "dec.augment.degrees", 0.0, 180.0)
    _float(cfg, "dec.augment.translate", 0.0, 0.5)
    # A file dataset's dimension is known only once it is read: PCA is clipped to it there.
    _int(cfg, "baselines.pca_components", 1, INPUT_DIMS.get(name))

    _choice(cfg, "export.format", ("csv", "parquet"))
    _choice(cfg, "export.method", EXPORT_METHODS)
    if cfg["export"]["method"] == "autoencoder_dec" and not cfg["dec"]["enabled"]:
        raise ConfigError("export.method=autoencoder_dec needs dec.enabled=true (that stage trains it), "
                          "got dec.enabled=false")
    _float(cfg, "export.contamination", 0.0, 0.5, lo_open=True, hi_open=True)
    _int(cfg, "evaluate.n_images", 1, 64)
    _int(cfg, "evaluate.plot_points", 100)
    _validate_anomaly(cfg, name)
    for key in ("tracking.experiment", "tracking.anomaly_experiment"):
        exp = _get(cfg, key)
        if not isinstance(exp, str) or not exp.strip():
            raise ConfigError(f"{key} must be a non-empty string, got {exp!r}")


def check_overrides(cfg: Mapping[str, Any], overrides: list[str]) -> None:
    """Refuse command-line overrides that the run's task would silently ignore.

    Under ``task=anomaly`` the autoencoder is ``anomaly.model`` with the bottleneck
    ``anomaly.latent_dim`` (see ``task_model``), never ``model``: a ``model=conv`` or
    ``model.latent_dim=5,10,20`` sweep would train the same model each time and look like a finding.
    """
    if cfg.get("task") != "anomaly":
        return
    arch = MODELS.get(cfg["anomaly"]["model"]["_target_"], "?")
    own = cfg["anomaly"].get("latent_dim")
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if key == "model" and o.split("=", 1)[-1] == arch:
            continue  # the README's table command (model=mlp) names what the anomaly branch trains anyway
        if key == "model" or key.startswith("model."):
            if key == "model.latent_dim" and own is not None:
                hint = (f"anomaly.latent_dim={own}; override anomaly.latent_dim instead (null: follow "
                        f"anomaly.model.latent_dim)")
            else:
                instead = f"model@anomaly.model={o.split('=', 1)[-1]}" if key == "model" else f"anomaly.{key}"
                hint = f"its own anomaly.model ({arch}); override {instead} instead"
            raise ConfigError(f"{o} has no effect under task=anomaly: the anomaly branch trains {hint}")


def _dotted_keys(node: Any, prefix: str = "") -> set[str]:
    keys = set()
    if isinstance(node, Mapping):
        for k, v in node.items():
            keys.add(f"{prefix}{k}")
            keys |= _dotted_keys(v, f"{prefix}{k}.")
    return keys


def check_keys(overrides: list[str], config_dir: str | Path = CONF_DIR) -> None:
    """Refuse, before Hydra composes anything, a command-line override whose key the
    config does not have (with or without ``+``): ConfigError naming the key and the
    closest valid one. Group choices (``model=conv``, ``+experiment=best``) and Hydra's
    own keys pass; the keys a group choice brings count as valid."""
    import difflib
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    groups, keys = [], []
    for o in parsed:
        key = o.key_or_group
        if key.split(".")[0].split("/")[0] == "hydra":
            continue
        if (Path(config_dir) / key.replace(".", "/")).is_dir() or "/" in key:
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            groups.append([f"{'+' if o.is_add() else ''}{key}={v}" for v in values])
        elif not o.is_delete():
            keys.append((o.input_line, key))
    if not keys:
        return
    valid: set[str] = set()
    for combo in itertools.product(*groups) if groups else [()]:
        valid |= _dotted_keys(OmegaConf.to_container(compose(list(combo), config_dir), resolve=False))
    for line, key in keys:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else "; `latentlab --cfg job` lists every key"
            raise ConfigError(f"{line}: the config has no key {key!r}{hint}")


def task_model(cfg: Mapping[str, Any], task: str) -> dict[str, Any]:
    """The autoencoder config a task trains: ``model`` for clustering; for the anomaly branch
    its own ``anomaly.model`` with its own bottleneck (``anomaly.latent_dim``; null = that
    model's latent_dim). A tight one is its signal, since unfamiliar images then reconstruct
    badly, where clustering wants room for neighbourhoods."""
    if task != "anomaly":
        return dict(cfg["model"])
    model = dict(cfg["anomaly"]["model"])
    if cfg["anomaly"].get("latent_dim") is not None:
        model["latent_dim"] = cfg["anomaly"]["latent_dim"]
    if cfg["anomaly"].get("hidden") is not None and MODELS.get(model["_target_"]) == "mlp":
        model["hidden"] = cfg["anomaly"]["hidden"]
    return model


def budget_epochs(min_steps: int, steps_per_epoch: int, cap: int | None) -> int:
    """The epochs ``min_steps`` optimizer steps take at ``steps_per_epoch``, at most ``cap``
    (``train.budget_max_epochs``, ``finetune.budget_max_epochs``): a small dataset's epoch is
    a step or two, and the budget alone would make it thousands of passes."""
    epochs = math.ceil(min_steps / max(1, steps_per_epoch))
    return epochs if cap is None else min(epochs, cap)


def resolve_k(cluster: Mapping[str, Any], y: np.ndarray) -> tuple[int | None, str | None, str]:
    """(k, select_k, why) for the ``cluster`` config node on data labelled y (N,) (``NO_LABEL``,
    -1, where there are none); ``why`` is the line that says where k came from.

    ``cluster.k`` an int: that k. null: the number of distinct label values (labels only
    count the groups; they are never fitted), or, without labels, None and the criterion
    ``cluster.select_k`` that chooses it in ``cluster.k_range`` on each embedding
    (``fit_predict`` does). Only those three keys are read."""
    k, criterion, (lo, hi) = cluster["k"], cluster["select_k"], cluster["k_range"]
    if k is not None:
        return k, None, f"k={k} (cluster.k)"
    classes = np.unique(y[y >= 0])
    if len(classes) >= 2:
        return int(len(classes)), None, f"k={len(classes)}: the number of distinct label values (cluster.k=N sets another)"
    if criterion is None:
        raise ConfigError("cluster.k=null needs labels to count the groups, or cluster.select_k to choose k without "
                          "them; this data has no labels: set cluster.k=N or cluster.select_k=silhouette")
    why = "no labels" if len(classes) == 0 else "a single label value"
    return None, criterion, f"k chosen by {criterion} over k in [{lo}, {hi}] ({why}; cluster.k=N sets it)"


class AnomalyPlan(NamedTuple):
    protocol: str        # one_class | leave_out | unsupervised
    classes: list[int]   # the listed classes as label indices (normal for one_class, anomalous for leave_out)
    why: str             # the line that says what the branch does with this data


def sample_noun(dataset: str, images: bool) -> str:
    """What a sample of this data is called in messages: rows of a table, images, samples."""
    return "images" if images else ("rows" if dataset == "table" else "samples")


def _class_index(value: Any, names: list[str], key: str) -> int:
    if str(value) in names:  # a label value (setosa; a digit "3") first, then an index into them
        return names.index(str(value))
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    listed = ", ".join(f"{n} ({i})" for i, n in enumerate(names))
    raise ConfigError(f"{key}: {value!r} is neither a label value nor a class index of this data; its classes "
                      f"(index) are {listed}")


def anomaly_plan(a: Mapping[str, Any], y_train: np.ndarray, names: list[str] | None) -> AnomalyPlan:
    """The anomaly branch's protocol and classes for data labelled y_train (N,) (-1: no
    label) whose label values are ``names`` (None: the class indices themselves).

    ``anomaly.normal`` (one_class) and ``anomaly.anomalous`` (leave_out) list label values
    (``[setosa]``) or their indices; one_class with ``normal: null`` takes the most frequent
    class as normal, and on data without labels becomes ``unsupervised``."""
    protocol, normal, anomalous = a["protocol"], a["normal"], a["anomalous"]
    labelled = y_train[y_train >= 0]
    if protocol == "unsupervised":
        return AnomalyPlan("unsupervised", [], "unsupervised: every training sample is taken as normal data")
    key = "anomaly.normal" if protocol == "one_class" else "anomaly.anomalous"
    listed = normal if protocol == "one_class" else anomalous
    if len(labelled) == 0:
        if listed is None:
            return AnomalyPlan("unsupervised", [], "no labels: unsupervised, every training sample is normal "
                                                    "data (anomaly=unsupervised says so)")
        raise ConfigError(f"{key}={list(listed)} names classes, but this data has no labels: use anomaly=unsupervised "
                          f"(or {key}=null)")
    counts = np.bincount(labelled)
    names = list(names) if names else [str(i) for i in range(len(counts))]
    if listed is None:
        top = int(counts.argmax())
        return AnomalyPlan(protocol, [top], f"normal: the most frequent class {names[top]!r} ({counts[top]} of "
                                            f"{len(labelled)} training labels; {key}=[...] sets others)")
    classes = sorted({_class_index(v, names, key) for v in listed})
    shown = ", ".join(repr(names[c]) for c in classes)
    role = "normal" if protocol == "one_class" else "anomalous"
    return AnomalyPlan(protocol, classes, f"{role}: {shown} ({key})")


def write_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> None:
    """Regenerate ``params.yaml`` from ``conf/`` with DVC's own composer."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(Path(path), str(CONF_DIR), None, "config", str(CONF_DIR.parent), list(overrides or []))


if __name__ == "__main__":
    write_params()
