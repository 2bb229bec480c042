"""The valid value of every choice-valued setting, and the one check that enforces them.

A leaf module (it imports only ``errors``): ``config`` validates with it, and library
modules that guard their own arguments call the same ``check``, so a bad value reads
the same wherever it is caught, and no module imports another to learn its options.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from latentlab.errors import ConfigError

TORCHVISION_DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}
FILE_DATASETS = ("table", "array", "images")   # the user's own file or folder, at data.path
DATASETS = (*TORCHVISION_DATASETS, "digits", "digits28", *FILE_DATASETS)
SCALINGS = ("standard", "minmax", "none")      # how a table's or array's features are scaled

MODELS = {"latentlab.models.MLPAutoencoder": "mlp", "latentlab.models.ConvAutoencoder": "conv"}
# Hydra instantiates `_target_`: only classes the project documents may be named.
OPTIMIZERS = ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD", "torch.optim.RMSprop")
PROTOCOLS = ("all", "train_test")
TASKS = ("cluster", "anomaly")
ACTIVATIONS = {"relu": "ReLU", "gelu": "GELU", "elu": "ELU", "leaky_relu": "LeakyReLU", "tanh": "Tanh",
               "silu": "SiLU"}  # config name -> torch.nn class
AUGMENT_TARGETS = ("auto", "augmented", "original")  # what the autoencoder reconstructs from an augmented image
FINETUNE_SCHEDULES = ("cosine", "onecycle")
FINETUNE_TARGETS = ("hard", "soft")
# export.method: the autoencoder methods (metric_names' names) whose stage saves the model that
# `latentlab predict` applies; the second needs dec.enabled
EXPORT_METHODS = ("autoencoder_selflabel", "autoencoder_dec")
MANIFOLDS = ("none", "umap")
ALGORITHMS = ("kmeans", "gmm")
SELECT_K = ("silhouette", "davies_bouldin", "calinski_harabasz")
ASSIGN_REST = ("neighbors", "transform")
ANOMALY_PROTOCOLS = ("one_class", "leave_out", "unsupervised")
RECON_ERRORS = ("mse", "max", "ssim")
IMAGE_ONLY_ERRORS = ("ssim",)  # structural similarity compares image windows: feature vectors have none
# anomaly.error: a measure, or auto, the best one that fits the data (ssim for images, mse for vectors)
ANOMALY_ERRORS = ("auto", *RECON_ERRORS)
VECTOR_DATASETS = ("table", "array")  # datasets whose samples are feature vectors, never images
ANOMALY_SCORES = ("recon", "knn", "mahalanobis", "recon+knn", "recon+mahalanobis")
THRESHOLDS = ("percentile", "fpr")
# Flattened input size and classes of each built-in dataset, to check PCA sizes and
# anomaly classes before any work.
INPUT_DIMS = {"mnist": 784, "fashion_mnist": 784, "kmnist": 784, "digits": 64, "digits28": 784}
CLASSES = {name: list(range(10)) for name in INPUT_DIMS}


def check(key: str, value: Any, options: Collection[Any]) -> Any:
    """``value`` if it is one of ``options``, else ConfigError naming ``key``, the value and the options."""
    if value not in options:
        raise ConfigError(f"{key} must be one of {list(options)}, got {value!r}")
    return value
