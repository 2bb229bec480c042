"""Anomaly scores from an autoencoder: reconstruction error, latent-space distance, both.

A sample is described by its features ``X`` of shape (N, 1 + d): column 0 is its
reconstruction error (see ``reconstruction_error``), columns 1.. its latent vector.
``AnomalyScorer`` follows scikit-learn: ``fit`` on normal samples only,
``score_samples`` (higher = more anomalous), ``threshold_`` set on held-out normal
samples, ``predict`` (1 = anomaly).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from sklearn.base import BaseEstimator
from sklearn.covariance import LedoitWolf
from sklearn.neighbors import NearestNeighbors

from latentlab.choices import ANOMALY_PROTOCOLS as PROTOCOLS
from latentlab.choices import ANOMALY_SCORES as SCORES
from latentlab.choices import IMAGE_ONLY_ERRORS, RECON_ERRORS, THRESHOLDS, check
from latentlab.config import AnomalyPlan, anomaly_plan, sample_noun
from latentlab.errors import ConfigError, TooLittleData



def reconstruction_error(x: torch.Tensor, recon: torch.Tensor, kind: str = "mse") -> np.ndarray:
    """(N, C, H, W) images and reconstructions in [0, 1] -> (N,) errors.

    mse: mean squared error; max: the worst pixel's squared error (a small, sharp
    defect); ssim: 1 - structural similarity (structure rather than intensity).
    """
    check("anomaly.error", kind, RECON_ERRORS)
    if kind == "ssim":
        if x.ndim != 4:
            raise ConfigError(f"anomaly.error=ssim compares images; these samples are vectors of shape "
                              f"{tuple(x.shape[1:])}: use anomaly.error=mse or max")
        return (1.0 - ssim(recon.float(), x.float())).numpy().astype(np.float64)
    sq = (recon.float() - x.float()).pow(2).flatten(1)
    return (sq.mean(1) if kind == "mse" else sq.amax(1)).numpy().astype(np.float64)


def _blur_matrix(n: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    """(n, n): reflect padding then a valid gaussian convolution along one axis, as one
    linear map (torchmetrics' window: int(3.5 sigma + 0.5) * 2 + 1 taps, 11 for sigma 1.5)."""
    k = int(3.5 * sigma + 0.5) * 2 + 1
    pad = (k - 1) // 2
    g = torch.exp(-0.5 * (torch.arange(k, dtype=torch.float64) - pad).div(sigma).pow(2))
    eye = nn.functional.pad(torch.eye(n, dtype=torch.float64)[None, None], (0, 0, pad, pad), mode="reflect")
    return nn.functional.conv2d(eye, (g / g.sum()).view(1, 1, k, 1))[0, 0].to(dtype)


def ssim(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """(N, C, H, W) x2 -> (N,) mean structural similarity: the numbers of torchmetrics'
    ``structural_similarity_index_measure(a, b, data_range=data_range, reduction="none")``
    (tests/test_anomaly.py holds the two together), computed as blur = A @ map @ B^T.
    The profile of anomaly scoring showed torchmetrics' 11x11 grouped convolution taking
    68% of the time; as two small matrix products it is ~5x faster (BENCHMARKS.md)."""
    h, w = a.shape[-2:]
    rows, cols = _blur_matrix(h, sigma, a.dtype), _blur_matrix(w, sigma, a.dtype)
    mu_a, mu_b, aa, bb, ab = (rows @ torch.cat((a, b, a * a, b * b, a * b)) @ cols.T).split(len(a))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    var_a = (aa - mu_a.pow(2)).clamp(min=0.0)
    var_b = (bb - mu_b.pow(2)).clamp(min=0.0)
    cov = ab - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.pow(2) + mu_b.pow(2) + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


@torch.inference_mode()
def features(net: torch.nn.Module, x: np.ndarray, error: str = "mse", batch_size: int = 2048) -> np.ndarray:
    """uint8 images (N, C, H, W) -> (N, 1 + d) float64: reconstruction error, then latents."""
    from latentlab.models import to_float

    check("anomaly.error", error, RECON_ERRORS)
    if len(x) == 0:
        raise ConfigError("no images to score")
    net.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = to_float(torch.from_numpy(x[i:i + batch_size]))
        z = net.encode(xb)
        err = reconstruction_error(xb, net.decode(z), error)
        out.append(np.column_stack([err, z.double().numpy()]))
    return np.concatenate(out)


def conformal_threshold(val_scores: np.ndarray, target_fpr: float) -> float:
    """The split-conformal threshold: the ceil((n + 1)(1 - target_fpr))-th smallest of n held-out
    normal scores. A new normal sample then scores above it with probability at most
    ``target_fpr`` (exchangeability), where an interpolated quantile of few scores overshoots
    (14 normals at 1%: 3.3% flagged). With fewer than 1 / target_fpr - 1 normals no score
    is high enough: the largest is used, and the run says it cannot promise the rate."""
    s = np.sort(np.asarray(val_scores, dtype=np.float64))
    rank = int(np.ceil((len(s) + 1) * (1.0 - target_fpr)))
    return float(s[min(rank, len(s)) - 1])


class AnomalyScorer(BaseEstimator):
    """Scores samples by how unlike the normal training data they are.

    Parameters
    ----------
    score : "recon" (reconstruction error), "knn" (mean distance to the k nearest normal
        latents), "mahalanobis" (in latent space, shrunk covariance), or the sum of
        reconstruction error and a latent score, each standardised on normal data.
    k : neighbours for "knn".
    threshold : "percentile" (the ``percentile``-th percentile of held-out normal
        scores) or "fpr" (the score that flags a fraction ``target_fpr`` of them).
    """

    def __init__(self, score: str = "recon+knn", k: int = 5, threshold: str = "percentile",
                 percentile: float = 95.0, target_fpr: float = 0.05) -> None:
        self.score = score
        self.k = k
        self.threshold = threshold
        self.percentile = percentile
        self.target_fpr = target_fpr

    def _validate(self, X: np.ndarray) -> np.ndarray:
        check("anomaly.score", self.score, SCORES)
        check("anomaly.threshold", self.threshold, THRESHOLDS)
        if not (isinstance(self.k, int) and self.k >= 1):
            raise ConfigError(f"k must be an int >= 1, got {self.k!r}")
        if not 0.0 < self.percentile < 100.0:
            raise ConfigError(f"percentile must be in (0, 100), got {self.percentile!r}")
        if not 0.0 < self.target_fpr < 1.0:
            raise ConfigError(f"target_fpr must be in (0, 1), got {self.target_fpr!r}")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] < 2:
            raise ConfigError(f"X must have shape (N, 1 + latent_dim), got {X.shape}")
        if not np.isfinite(X).all():
            raise ConfigError("X holds NaN or infinite values")
        return X

    def _latent(self, Z: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        if self.score.endswith("knn"):
            d, _ = self.nn_.kneighbors(Z, n_neighbors=self.k + exclude_self)
            return d[:, exclude_self:].mean(1)
        return self.cov_.mahalanobis(Z)

    def _raw(self, X: np.ndarray, exclude_self: bool = False) -> dict[str, np.ndarray]:
        parts = {}
        if self.score.startswith("recon"):
            parts["recon"] = X[:, 0]
        if self.score != "recon":
            parts["latent"] = self._latent(X[:, 1:], exclude_self)
        return parts

    def _combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        if len(parts) == 1:
            return next(iter(parts.values()))
        return sum((v - self.loc_[k]) / self.scale_[k] for k, v in parts.items())

    def fit(self, X: np.ndarray, X_val: np.ndarray | None = None) -> AnomalyScorer:
        """X: (N, 1 + d) features of normal training samples; X_val: held-out normal
        samples for the standardisation and the threshold (default: X itself, with
        each sample left out of its own neighbours)."""
        X = self._validate(X)
        if self.score.endswith("knn"):
            if len(X) <= self.k:
                raise ConfigError(f"k={self.k} needs more than {self.k} normal samples, got {len(X)}")
            self.nn_ = NearestNeighbors(n_neighbors=self.k).fit(X[:, 1:])
        elif self.score.endswith("mahalanobis"):
            self.cov_ = LedoitWolf().fit(X[:, 1:])
        if X_val is None:
            parts = self._raw(X, exclude_self=True)
        else:
            parts = self._raw(self._validate(X_val))
        self.loc_ = {k: float(np.median(v)) for k, v in parts.items()}
        # Robust spread: a few anomalies leaking into "normal" data barely move it.
        self.scale_ = {k: float(np.subtract(*np.percentile(v, [75, 25]))) or 1.0 for k, v in parts.items()}
        val_scores = self._combine(parts)
        if self.threshold == "percentile":
            self.threshold_ = float(np.percentile(val_scores, self.percentile))
        else:
            self.threshold_ = conformal_threshold(val_scores, self.target_fpr)
        self.n_features_in_ = X.shape[1]
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """(N, 1 + d) -> (N,) anomaly scores; higher is more anomalous."""
        X = self._validate(X)
        if X.shape[1] != self.n_features_in_:
            raise ConfigError(f"X has {X.shape[1]} columns, the scorer was fitted on {self.n_features_in_}")
        return self._combine(self._raw(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(N,) 1 for an anomaly (score above ``threshold_``), 0 for normal."""
        return (self.score_samples(X) > self.threshold_).astype(np.int64)


@dataclass
class AnomalyMetrics:
    auroc: float
    auprc: float            # average precision; chance level is the anomaly fraction
    precision: float        # at the scorer's threshold
    recall: float
    f1: float
    recall_at_fpr: float    # recall when a fraction ``fpr`` of normal samples is flagged
    fpr: float
    anomaly_fraction: float


def anomaly_metrics(is_anomaly: np.ndarray, scores: np.ndarray, threshold: float,
                    fpr: float = 0.05) -> AnomalyMetrics:
    """Metrics for unbalanced data: is_anomaly (N,) 0/1, scores (N,), higher = anomalous."""
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score, roc_curve

    y = np.asarray(is_anomaly).astype(int)
    if set(np.unique(y)) != {0, 1}:
        raise ConfigError("anomaly metrics need both normal (0) and anomalous (1) samples")
    p, r, f, _ = precision_recall_fscore_support(y, (scores > threshold).astype(int), average="binary",
                                                 zero_division=0)
    fprs, tprs, _ = roc_curve(y, scores)
    return AnomalyMetrics(auroc=float(roc_auc_score(y, scores)), auprc=float(average_precision_score(y, scores)),
                          precision=float(p), recall=float(r), f1=float(f),
                          recall_at_fpr=float(tprs[np.searchsorted(fprs, fpr, side="right") - 1]), fpr=fpr,
                          anomaly_fraction=float(y.mean()))


def unbalanced_indices(is_anomaly: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of every normal sample plus a random draw of anomalies making up
    ``fraction`` of the result: an unbalanced test set from a balanced one."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"anomaly_fraction must be null or in (0, 1), got {fraction!r}")
    is_anomaly = np.asarray(is_anomaly).astype(bool)
    normal, anomalies = np.flatnonzero(~is_anomaly), np.flatnonzero(is_anomaly)
    n_anom = max(1, int(round(len(normal) * fraction / (1.0 - fraction))))
    if n_anom > len(anomalies):
        raise ConfigError(f"anomaly_fraction={fraction} needs {n_anom} test anomalies, only {len(anomalies)} exist")
    return np.sort(np.concatenate([normal, rng.choice(anomalies, size=n_anom, replace=False)]))


def unbalanced_metrics(is_anomaly: np.ndarray, scores: np.ndarray, threshold: float, *, fraction: float,
                       draws: int, seed: int, fpr: float = 0.05) -> dict[str, float]:
    """Metrics on ``draws`` seeded unbalanced test sets (see ``unbalanced_indices``):
    the mean of each metric, and its standard deviation as ``<metric>_std``.

    One draw of a 1% test set holds only a few anomalies; the mean over draws is a
    steadier estimate of what a user with such data would see.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(draws):
        i = unbalanced_indices(is_anomaly, fraction, rng)
        rows.append(vars(anomaly_metrics(np.asarray(is_anomaly)[i], scores[i], threshold, fpr=fpr)))
    out: dict[str, float] = {}
    for k in rows[0]:
        v = np.array([r[k] for r in rows], dtype=float)
        out[k] = float(v.mean())
        if k not in ("fpr", "anomaly_fraction"):
            out[f"{k}_std"] = float(v.std())
    out["draws"] = draws
    out["n_anomalies"] = int(len(i) - np.sum(~np.asarray(is_anomaly, bool)))  # per draw
    return out


UNKNOWN = -1  # is_anomaly under the unsupervised protocol: no labels say which test samples are anomalies
# Fewer normal training images than this cannot train an autoencoder, hold out
# validation images and set a threshold with any meaning.
MIN_NORMAL = 64


@dataclass
class AnomalySplit:
    """Images (N, C, H, W) for one anomaly-detection experiment.

    ``x_fit`` / ``x_val``: what the autoencoder and the scorer may see (normal, up to
    the training contamination); ``x_test`` with ``is_anomaly`` (N,) 0/1 and the
    original class ``y_test``. Test images come from the held-out split only.
    """

    x_fit: np.ndarray
    x_val: np.ndarray
    x_test: np.ndarray
    is_anomaly: np.ndarray
    y_test: np.ndarray
    normal_classes: list[int]
    n_contaminated: int  # anomalies leaked into x_fit + x_val
    # feature vectors: the (center, scale) they were z-scored with on the normal samples
    standardise: tuple[np.ndarray, np.ndarray] | None = None


def make_split(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
               protocol: str, classes: list[int], anomaly_fraction: float | None = None,
               train_contamination: float = 0.0, val_fraction: float = 0.1, seed: int = 0,
               noun: str = "images") -> AnomalySplit:
    """Build the normal/anomalous sets of a protocol, seeded.

    one_class: the listed classes are normal; leave_out: every class but the listed
    ones is normal; unsupervised: no labels, every training sample is used (the data's
    own anomalies included: the threshold then states how many are assumed) and the test
    samples' ``is_anomaly`` is ``UNKNOWN``. ``noun`` names the samples in messages. Data
    too small for the protocol raises ``TooLittleData`` naming the fix. ``anomaly_fraction``: subsample the test anomalies so that they are
    this fraction of the test set (None: every test image, the standard protocol).
    ``train_contamination``: this fraction of the training pool is anomalies from the
    training split (real data is never clean); validation is drawn from the same pool.
    """
    all_classes = sorted(int(c) for c in np.unique(np.concatenate([y_train, y_test])) if c >= 0)
    check("anomaly.protocol", protocol, PROTOCOLS)
    if protocol == "unsupervised":
        if not 0.0 < val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in (0, 0.5), got {val_fraction!r}")
        if len(x_train) < MIN_NORMAL:
            raise TooLittleData(f"only {len(x_train)} training {noun}; at least {MIN_NORMAL} are needed to train, "
                                "validate and set a threshold")
        pool = np.random.default_rng(seed).permutation(len(x_train))
        n_val = max(1, int(round(len(pool) * val_fraction)))
        return AnomalySplit(x_fit=x_train[np.sort(pool[n_val:])], x_val=x_train[np.sort(pool[:n_val])],
                            x_test=x_test, is_anomaly=np.full(len(x_test), UNKNOWN, dtype=np.int64), y_test=y_test,
                            normal_classes=[], n_contaminated=0)
    if not all_classes:
        raise ConfigError(f"anomaly protocol {protocol} needs labelled data to say which classes are normal; "
                          "this data has no labels: use anomaly=unsupervised")
    bad = [c for c in classes if c not in all_classes]
    if not classes or bad:
        raise ConfigError(f"anomaly classes must be a non-empty list from {all_classes}, got {classes!r}")
    normal = sorted(set(classes)) if protocol == "one_class" else [c for c in all_classes if c not in classes]
    if not normal or len(normal) == len(all_classes):
        raise ConfigError(f"{protocol} with classes {classes} leaves {len(normal)} of {len(all_classes)} classes "
                          "normal: both normal and anomalous classes are needed")
    if anomaly_fraction is not None and not 0.0 < anomaly_fraction < 1.0:
        raise ConfigError(f"anomaly_fraction must be null or in (0, 1), got {anomaly_fraction!r}")
    if not 0.0 <= train_contamination < 0.5:
        raise ConfigError(f"train_contamination must be in [0, 0.5), got {train_contamination!r}")
    if not 0.0 < val_fraction < 0.5:
        raise ConfigError(f"val_fraction must be in (0, 0.5), got {val_fraction!r}")

    rng = np.random.default_rng(seed)
    is_normal_train = np.isin(y_train, normal)
    pool = np.flatnonzero(is_normal_train)
    if len(pool) < MIN_NORMAL:
        raise TooLittleData(f"only {len(pool)} normal training {noun} (classes {normal}); at least {MIN_NORMAL} "
                            "are needed to train, validate and set a threshold: list more normal classes "
                            "(anomaly.normal=[...]) or use anomaly=unsupervised")
    test_anom = np.isin(y_test, normal, invert=True)
    if test_anom.all() or not test_anom.any():
        raise TooLittleData(f"the test split holds {int((~test_anom).sum())} normal and {int(test_anom.sum())} "
                            f"anomalous {noun} (normal classes {normal}); both are needed")
    n_leak = int(round(len(pool) * train_contamination / (1.0 - train_contamination)))
    leak = rng.choice(np.flatnonzero(~is_normal_train), size=n_leak, replace=False) if n_leak else np.array([], int)
    pool = rng.permutation(np.concatenate([pool, leak]))
    n_val = max(1, int(round(len(pool) * val_fraction)))

    test = (np.arange(len(y_test)) if anomaly_fraction is None
            else unbalanced_indices(test_anom, anomaly_fraction, rng))
    return AnomalySplit(x_fit=x_train[np.sort(pool[n_val:])], x_val=x_train[np.sort(pool[:n_val])],
                        x_test=x_test[test], is_anomaly=test_anom[test].astype(np.int64), y_test=y_test[test],
                        normal_classes=normal, n_contaminated=n_leak)


def error_for(error: str, images: bool) -> str:
    """The reconstruction error ``anomaly.error`` names for this data: ``auto`` is ssim on
    images (the best of the anomaly study, pipelines/anomaly, on one-class MNIST) and mse on feature vectors.
    An image-only measure on vectors is refused, naming the value."""
    if error == "auto":
        return "ssim" if images else "mse"
    check("anomaly.error", error, RECON_ERRORS)
    if error in IMAGE_ONLY_ERRORS and not images:
        raise ConfigError(f"anomaly.error={error} compares images, but these samples are feature vectors: "
                          "use anomaly.error=auto, mse or max")
    return error


def plan_for(a: Mapping[str, Any], ds: Any) -> AnomalyPlan:
    """``anomaly_plan`` for a prepared dataset: its labels and their values."""
    return anomaly_plan(a, ds.y_train, ds.meta.get("classes"))


def split_for(a: Mapping[str, Any], seed: int, ds: Any) -> AnomalySplit:
    """The ``anomaly`` config's normal training/validation samples and labelled test samples
    (the whole held-out split) of a prepared dataset, seeded; ConfigError before any
    training when the classes cannot apply to this data, TooLittleData when the data
    cannot support the protocol."""
    plan = plan_for(a, ds)
    split = make_split(ds.x_train, ds.y_train, ds.x_test, ds.y_test, protocol=plan.protocol, classes=plan.classes,
                       anomaly_fraction=None, train_contamination=a["train_contamination"],
                       val_fraction=a["val_fraction"], seed=seed,
                       noun=sample_noun(ds.meta.get("dataset", ""), ds.is_images))
    return split if ds.is_images else standardised_on_normals(split)


def standardised_on_normals(split: AnomalySplit) -> AnomalySplit:
    """Feature vectors z-scored on the samples the autoencoder fits (the normal ones), not on the
    whole training split (whose anomalies would set the scale the normal rows are measured in).
    The data's own scaler came first; this is an affine map on top of it."""
    center = split.x_fit.mean(0, dtype=np.float64)
    scale = split.x_fit.std(0, dtype=np.float64)
    scale = np.where(scale > 0, scale, 1.0)
    z = lambda x: ((x - center) / scale).astype(np.float32)  # noqa: E731
    return AnomalySplit(x_fit=z(split.x_fit), x_val=z(split.x_val), x_test=z(split.x_test), is_anomaly=split.is_anomaly,
                        y_test=split.y_test, normal_classes=split.normal_classes,
                        n_contaminated=split.n_contaminated, standardise=(center, scale))


class Detector(NamedTuple):
    """What `latentlab predict` needs to score new samples as the anomaly branch scored its test
    split: the fitted ``scorer``, the reconstruction ``error`` it used, the normal-sample
    ``standardise`` (center, scale) of feature vectors, and how the data were read
    (``data``: the config node, ``meta``: the prepared data's)."""
    scorer: AnomalyScorer
    error: str
    standardise: tuple[np.ndarray, np.ndarray] | None
    data: dict
    meta: dict

    def score(self, net: Any, x: np.ndarray) -> np.ndarray:
        """(N, ...) samples read like the training data -> (N,) anomaly scores."""
        if self.standardise is not None:
            center, scale = self.standardise
            x = ((x - center) / scale).astype(np.float32)
        return self.scorer.score_samples(features(net, x, self.error))

    def save(self, path: Any) -> None:
        import pickle

        from latentlab.files import atomic

        with atomic(path) as tmp, open(tmp, "wb") as f:
            pickle.dump(self._asdict(), f)

    @classmethod
    def load(cls, path: Any) -> Detector:
        import pickle

        with open(path, "rb") as f:
            return cls(**pickle.load(f))


def write_skipped(path: Any, reason: str) -> None:
    """An anomaly stage's output (whatever its suffix) when the branch is skipped: an .npz
    holding the reason, which the next stage recognises (``skipped_reason``)."""
    from latentlab.files import atomic

    with atomic(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, skipped=np.array(reason))


def skipped_reason(path: Any) -> str | None:
    """The reason a previous anomaly stage skipped the branch, or None."""
    from pathlib import Path

    path = Path(path)
    if not path.exists() or path.stat().st_size > 1 << 20:
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["skipped"]) if "skipped" in z.files else None
    except (OSError, ValueError):  # a torch checkpoint, not the marker
        return None


# Images reach the raw detectors as a PCA of their pixels (as the published pixel baselines do).
RAW_PCA_COMPONENTS = 50
LOF_NEIGHBORS = 20  # scikit-learn's and PyOD's default


def _raw_view(x: np.ndarray, pca: Any) -> np.ndarray:
    flat = x.reshape(len(x), -1).astype(np.float64)
    return flat if pca is None else pca.transform(flat / 255.0)


def raw_scores(x_fit: np.ndarray, x_score: np.ndarray, *, k: int, seed: int) -> dict[str, np.ndarray]:
    """The anomaly scores of the raw twins (``metric_names.RAW_DETECTORS``), higher = more anomalous:
    each fitted on the normal samples ``x_fit`` alone and scored on ``x_score``, on the same
    inputs: feature vectors z-scored on the normal samples; images (N, C, H, W) as a
    ``RAW_PCA_COMPONENTS``-component PCA of their pixels fitted on the normal samples, z-scored.
    kNN: the mean distance to the ``k`` nearest normal samples (``anomaly.k``, the autoencoder
    score's own k); LOF with 20 neighbours (novelty mode); isolation forest, seeded."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor

    from latentlab import metric_names as M

    pca = None
    if x_fit.ndim == 4:
        n = min(RAW_PCA_COMPONENTS, len(x_fit) - 1, int(np.prod(x_fit.shape[1:])))
        pca = PCA(n_components=n, random_state=seed).fit(x_fit.reshape(len(x_fit), -1).astype(np.float64) / 255.0)
    f0 = _raw_view(x_fit, pca)
    center, scale = f0.mean(0), f0.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    fit, score = (f0 - center) / scale, (_raw_view(x_score, pca) - center) / scale
    kk = min(k, len(fit) - 1)
    d, _ = NearestNeighbors(n_neighbors=kk).fit(fit).kneighbors(score)
    lof = LocalOutlierFactor(n_neighbors=min(LOF_NEIGHBORS, len(fit) - 1), novelty=True).fit(fit)
    forest = IsolationForest(random_state=seed).fit(fit)
    return {M.RAW_KNN: d.mean(1), M.RAW_LOF: -lof.score_samples(score), M.RAW_IFOREST: -forest.score_samples(score)}


def fpr_interval(flagged: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a false-positive rate: ``flagged`` of ``n`` normal
    samples above the threshold."""
    from scipy.stats import binomtest

    ci = binomtest(flagged, n).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def scorer_for(a: Mapping[str, Any]) -> AnomalyScorer:
    return AnomalyScorer(score=a["score"], k=a["k"], threshold=a["threshold"], percentile=a["percentile"],
                         target_fpr=a["target_fpr"])
