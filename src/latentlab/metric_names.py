"""Metric and method names, defined once and used by training, plots, DVC and MLflow."""

RECON_LOSS = "recon_loss"
TRAIN_LOSS = f"train/{RECON_LOSS}"
VAL_LOSS = f"val/{RECON_LOSS}"

# Clustering methods scored side by side in every run.
AUTOENCODER = "autoencoder"         # the autoencoder's latents -> the `cluster` config's pipeline
FINETUNED = "finetuned"             # the encoder self-labelled on the autoencoder method's confident clusters
RAW_KMEANS = "raw_kmeans"           # baseline: k-means on raw pixels
RAW_PCA_KMEANS = "raw_pca_kmeans"   # baseline: PCA on raw pixels -> k-means
RAW_UMAP = "raw_umap"               # baseline: PCA on raw pixels -> UMAP -> the configured clusterer
METHODS = (AUTOENCODER, FINETUNED, RAW_KMEANS, RAW_PCA_KMEANS, RAW_UMAP)

# Per-method clustering scores.
SCORES = ("acc", "nmi", "ari", "purity")


def recon_loss(stage: str) -> str:
    """The logged name of the reconstruction loss for a stage: train, val or test."""
    return f"{stage}/{RECON_LOSS}"
