"""Stage `baselines`: what the autoencoder must beat, clustering the raw inputs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from joblib import Parallel, delayed

from latentlab import metric_names as M
from latentlab.clustering import assign, fit_predict_many, pipeline_params, pixels
from latentlab.config import resolve_k
from latentlab.data import Prepared
from latentlab.files import save_npz
from latentlab.stages.common import by_protocol, main


def baselines(cfg: Mapping[str, Any], data: Path, out: Path) -> str:
    """What the autoencoder must beat, on raw pixels: k-means, PCA + k-means, and
    ``raw_cluster``, the ``autoencoder`` method's twin: the pixels' PCA through the cluster
    config's own pipeline (its manifold step, UMAP in the default, then its clusterer), so
    that the two differ in the latents alone. Under train_test also raw_cluster's
    assignments of the fitted images (``fit_raw_cluster``), the labels raw_selflabel learns.

    The twin and the two k-means run in two processes side by side, one thread each
    (joblib's workers): seeded UMAP keeps to one core anyway, so on two cores the k-means
    take the other instead of queueing behind it."""
    ds = Prepared.load(data)
    x_fit, x_score = by_protocol(cfg["protocol"], pixels(ds.x_train), pixels(ds.x_test))
    # the pixels' own scaling and PCA, never the latents' (cluster.standardize / pca: not read)
    k, select_k, why = resolve_k(cfg["cluster"], by_protocol(cfg["protocol"], ds.y_train, ds.y_test)[0])
    print(f"  {why}", flush=True)
    c = pipeline_params(cfg["cluster"], cfg["seed"], standardize=False, pca=None, k=k, select_k=select_k)
    km = {**c, "manifold": "none", "algorithm": "kmeans"}
    pcs = cfg["baselines"]["pca_components"]
    if pcs > min(x_fit.shape):  # a small table: PCA keeps what there is
        print(f"  baselines.pca_components={pcs} exceeds the data's {min(x_fit.shape)} dimensions/samples: "
              f"using {min(x_fit.shape)}", flush=True)
        pcs = min(x_fit.shape)
    groups = [[(M.RAW_CLUSTER, {**c, "pca": pcs})],
              [(M.RAW_KMEANS, km), (M.RAW_PCA_KMEANS, {**km, "pca": pcs})]]
    fitted = {name: r for part in Parallel(n_jobs=len(groups))(delayed(fit_predict_many)(x_fit, x_score, g) for g in groups)
              for name, r in part.items()}
    out_labels = {name: fitted[name].labels for name in (M.RAW_KMEANS, M.RAW_PCA_KMEANS, M.RAW_CLUSTER)}
    extra = {} if x_score is None else {f"fit_{M.RAW_CLUSTER}": assign(fitted[M.RAW_CLUSTER].pipeline, x_fit)[0]}
    save_npz(out, **out_labels, **extra)
    return f"wrote {out}: {len(out_labels[M.RAW_KMEANS])} assignments for {', '.join(out_labels)}"


if __name__ == "__main__":  # DVC: python -m latentlab.stages.baselines --help
    main(baselines)
