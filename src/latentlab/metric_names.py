"""Metric and method names, defined once and used by training, plots, DVC and MLflow."""

RECON_LOSS = "recon_loss"
TRAIN_LOSS = f"train/{RECON_LOSS}"
VAL_LOSS = f"val/{RECON_LOSS}"

# Clustering methods scored side by side in every run. A method whose name starts with
# `raw_` uses no autoencoder: it is a baseline, computed from the inputs alone.
AUTOENCODER = "autoencoder"                  # the autoencoder's latents -> the `cluster` config's pipeline
AUTOENCODER_KMEANS = "autoencoder_kmeans"    # the autoencoder's latents -> k-means
AUTOENCODER_SELFLABEL = "autoencoder_selflabel"  # the encoder trained further on its own confident clusters
AUTOENCODER_DEC = "autoencoder_dec"          # encoder, decoder and cluster centres trained together (dec.enabled)
RAW_KMEANS = "raw_kmeans"                    # baseline: k-means on raw pixels
RAW_PCA_KMEANS = "raw_pca_kmeans"            # baseline: PCA on raw pixels -> k-means
RAW_CLUSTER = "raw_cluster"                  # baseline: PCA on raw pixels -> the `cluster` config's pipeline
RAW_SELFLABEL = "raw_selflabel"              # baseline: a fresh network self-labelled on raw_cluster's clusters
RAW_DEC = "raw_dec"                          # baseline: DEC of the pixels' PCA from raw_cluster's clusters (dec.enabled)
AUTOENCODER_METHODS = (AUTOENCODER_SELFLABEL, AUTOENCODER_DEC, AUTOENCODER, AUTOENCODER_KMEANS)
RAW_METHODS = (RAW_SELFLABEL, RAW_DEC, RAW_CLUSTER, RAW_PCA_KMEANS, RAW_KMEANS)
METHODS = (*AUTOENCODER_METHODS, *RAW_METHODS)
# Scored only when turned on (dec.enabled): their stages then write them, else nothing.
OPTIONAL = (AUTOENCODER_DEC, RAW_DEC)
# Each autoencoder method's raw twin: the same procedure with the pixels in place of the latents.
TWINS = {AUTOENCODER_SELFLABEL: RAW_SELFLABEL, AUTOENCODER_DEC: RAW_DEC, AUTOENCODER: RAW_CLUSTER,
         AUTOENCODER_KMEANS: RAW_KMEANS}
# The default's best autoencoder method: its exported `cluster` column and `latentlab predict`
# (export.method), its unlabelled runs' reference and `latentlab compare`'s ranking.
FINAL = AUTOENCODER_SELFLABEL

# Per-method clustering scores.
SCORES = ("acc", "nmi", "ari", "purity")


def is_raw(method: str) -> bool:
    """True for a baseline: a method that uses no autoencoder."""
    return method.startswith("raw_")


def recon_loss(stage: str) -> str:
    """The logged name of the reconstruction loss for a stage: train, val or test."""
    return f"{stage}/{RECON_LOSS}"

# The anomaly branch's raw twins: standard detectors on the same normal rows, no autoencoder
RAW_KNN = "raw_knn"                          # mean distance to the k nearest normal samples (standardised inputs)
RAW_LOF = "raw_lof"                          # local outlier factor (novelty mode) on the same inputs
RAW_IFOREST = "raw_iforest"                  # isolation forest on the same inputs
RAW_DETECTORS = (RAW_KNN, RAW_LOF, RAW_IFOREST)
