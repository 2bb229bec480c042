"""latentlab: autoencoder latent spaces for clustering and anomaly detection."""

__version__ = "0.1.0"
