"""`latentlab compare` on a real MLflow store holding runs logged as the pipeline logs them."""

from __future__ import annotations

import mlflow
import pytest

from latentlab import metric_names as M
from latentlab.compare import compare


def _log(uri: str, seed: int, latent: int, acc: dict[str, float]) -> None:
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("latentlab")
    with mlflow.start_run(run_name=f"mnist-mlp-d{latent}-seed{seed}"):
        mlflow.log_params({"seed": seed, "model.latent_dim": latent, "model._target_": "latentlab.models.MLPAutoencoder"})
        for m, v in acc.items():
            mlflow.log_metrics({f"{m}/acc": v, f"{m}/nmi": v - 0.05})
        for m, twin in [(m, t) for m, t in M.TWINS.items() if m in acc]:
            mlflow.log_metrics({f"gain/{m}/acc": acc[m] - acc[twin], f"gain/{m}/nmi": acc[m] - acc[twin]})
        mlflow.log_metric("recon_mse", 0.01)


def test_seeds_of_one_configuration_read_as_one_row_and_a_twin_chart(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for seed, shift in ((0, 0.0), (1, 0.01), (2, -0.01)):
        _log(uri, seed, 32, {m: 0.9 + shift + (0.02 if not M.is_raw(m) else 0.0) for m in M.METHODS})
    metrics = (f"{M.FINAL}/acc", f"gain/{M.FINAL}/acc")  # one plot each; the twin chart covers every method
    report = compare(experiment="latentlab", out_dir=tmp_path / "cmp", uri=uri, metrics=metrics)
    table = (tmp_path / "cmp/summary.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| "))
    assert header.startswith("| configuration | runs |") and "_all" not in table
    assert "all runs (no param varies) | 3 |" in table
    assert report.best_config[f"gain/{M.FINAL}/acc"] == pytest.approx(0.02)
    twins = tmp_path / "cmp/twins.png"
    assert twins in report.files and twins.stat().st_size > 10_000


def test_dec_columns_appear_when_some_configuration_ran_it(tmp_path):
    """The k-means preset's method (autoencoder_dec) is in the default report beside the
    others, a '-' for a configuration that did not run it, and absent when none did."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plain = [m for m in M.METHODS if m not in M.OPTIONAL]
    for seed in (0, 1):
        _log(uri, seed, 32, {m: 0.9 for m in plain})
    compare(experiment="latentlab", out_dir=tmp_path / "without", uri=uri)
    assert M.AUTOENCODER_DEC not in (tmp_path / "without/summary.md").read_text()
    for seed in (0, 1):
        _log(uri, seed, 10, {m: 0.8 + (0.1 if m == M.AUTOENCODER_DEC else 0.0) for m in M.METHODS})
    report = compare(experiment="latentlab", out_dir=tmp_path / "with", uri=uri)
    lines = (tmp_path / "with/summary.md").read_text().splitlines()
    head = next(line for line in lines if line.startswith("| model.latent_dim")).split(" | ")
    col = head.index(f"{M.AUTOENCODER_DEC}/acc")
    rows = {line.split(" | ")[0]: line.split(" | ") for line in lines if line.startswith(("| 10 ", "| 32 "))}
    assert rows["| 10"][col].startswith("0.900 ± 0.000") and rows["| 32"][col] == "-"
    dec_row = report.summary[report.summary["params.model.latent_dim"] == 10].iloc[0]
    assert dec_row[f"gain/{M.AUTOENCODER_DEC}/acc mean"] == pytest.approx(0.9 - 0.8)
    assert (tmp_path / "with" / f"gain_{M.AUTOENCODER_DEC}_acc.png").stat().st_size > 5000
    # a sweep of the latent size alone: its values read as the ints they are, and the twin chart of
    # the best one has its runs (a float key once matched none)
    assert report.best_config_name == "model.latent_dim=32" and "best configuration by mean" in lines[-2]
    assert (tmp_path / "with/twins.png") in report.files


def test_configurations_rank_by_the_method_each_run_exported(tmp_path):
    """A k-means preset run exports DEC: it ranks by DEC's scores, not by self-labelling's,
    and the table then shows the exported scores; runs logged before evaluate logged them rank
    by autoencoder_selflabel, which they exported."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for seed in (0, 1):  # an older run: no export.method, no exported/* metrics
        _log(uri, seed, 32, {m: 0.9 for m in M.METHODS if m not in M.OPTIONAL})
    for seed in (0, 1):
        _log(uri, seed, 10, {m: 0.8 + (0.15 if m == M.AUTOENCODER_DEC else 0.0) for m in M.METHODS})
        run = mlflow.search_runs(experiment_names=["latentlab"], order_by=["start_time DESC"]).iloc[0]
        with mlflow.start_run(run_id=run["run_id"]):
            mlflow.log_param("export.method", M.AUTOENCODER_DEC)
            mlflow.log_metrics({"exported/acc": 0.95, "exported/nmi": 0.9})
    report = compare(experiment="latentlab", out_dir=tmp_path / "cmp", uri=uri)
    # (export.method varies with the latent size here, so the size alone names the configuration)
    assert report.best_config_name == "model.latent_dim=10"
    assert report.best_config["exported/acc"] == pytest.approx(0.95)
    text = (tmp_path / "cmp/summary.md").read_text()
    assert "best configuration by mean exported/acc" in text
    older = report.summary[report.summary["params.model.latent_dim"] == 32].iloc[0]
    assert older["exported/acc mean"] == pytest.approx(0.9)  # its autoencoder_selflabel
    by_final = compare(experiment="latentlab", out_dir=tmp_path / "old", uri=uri, rank_by=f"{M.FINAL}/acc")
    assert "latent_dim=32" in by_final.best_config_name


def test_exps_shows_the_params_that_differ_and_each_method_beside_its_twin():
    """`latentlab exps` on `dvc exp show --json`'s shape: a baseline and two queued experiments."""
    from latentlab.exps import rows_of, table

    def data(latent: int, acc: float) -> dict:
        metrics = {f"outputs/evaluate/scores/{m}.json": {"data": {"acc": acc, "nmi": acc - 0.05, "gain_acc": 0.01,
                                                                 "twin": t}} for m, t in M.TWINS.items()}
        metrics["outputs/anomaly/evaluate/scores/test.json"] = {"data": {"auroc": 0.998}}
        return {"params": {"params.yaml": {"data": {"seed": 0, "model": {"latent_dim": latent},
                                                    "data": {"mirror": f"/somewhere/{latent}"}}}},
                "metrics": metrics}

    unrun = {"params": {"params.yaml": {"data": {"seed": 0, "model": {"latent_dim": 32, "hidden": 7}}}}, "metrics": {}}
    shown = [{"rev": "workspace", "name": None, "data": data(32, 0.97), "experiments": None},
             {"rev": "fedcba9876", "name": "old", "data": unrun, "experiments": None},
             {"rev": "abcdef0123", "name": "main", "data": data(32, 0.97),
              "experiments": [{"revs": [{"rev": "1111111", "name": "tiny-pies", "data": data(2, 0.5)}]},
                              {"revs": [{"rev": "2222222", "name": "bold-cats", "data": data(8, 0.8)}]}]}]
    text = table(rows_of(shown))
    lines = text.splitlines()
    assert lines[0].split() == ["experiment", "model.latent_dim", *M.AUTOENCODER_METHODS, "anomaly", "AUROC"]
    row = next(line.split() for line in lines if line.startswith("tiny-pies "))
    assert row[:4] == ["tiny-pies", "2", "0.5000", "(+0.0100)"] and row[-1] == "0.9980"
    assert [line.split()[0] for line in lines[2:6]] == ["workspace", "main", "tiny-pies", "bold-cats"]
    assert "data.mirror" not in text and "seed" not in lines[0] and "hidden" not in text
    assert "; 1 without results left out" in lines[-2] and max(map(len, lines)) <= 160
    # experiments without DEC (dec.enabled=false, the default): no empty autoencoder_dec column
    for rev in shown:
        for d in [rev["data"], *(r["data"] for e in rev["experiments"] or [] for r in e["revs"])]:
            d["metrics"] = {f: v for f, v in d["metrics"].items() if not any(x in f for x in M.OPTIONAL)}
    off = table(rows_of(shown)).splitlines()
    assert M.AUTOENCODER_DEC not in off[0] and M.AUTOENCODER_DEC not in off[-1]
    assert next(line.split() for line in off if line.startswith("tiny-pies "))[4] == "0.5000"


def test_twin_rows_are_mean_min_max_over_runs_and_skip_what_a_run_lacks():
    from latentlab.plots import twin_rows

    runs = [{"autoencoder": {"acc": 0.9, "nmi": 0.8}, "raw_cluster": {"acc": 0.8, "nmi": 0.7}},
            {"autoencoder": {"acc": 0.7, "nmi": float("nan")}, "raw_cluster": {"acc": 0.6, "nmi": 0.5}}]
    rows = twin_rows(runs, {"autoencoder": "raw_cluster", "autoencoder_kmeans": "raw_kmeans"})
    assert list(rows) == ["autoencoder"]  # no run has the k-means pair
    r = rows["autoencoder"]
    assert r["twin"] == "raw_cluster"
    assert r["acc"] == pytest.approx((0.8, 0.7, 0.9))
    assert r["nmi"] == pytest.approx((0.8, 0.8, 0.8))  # the NaN is skipped
    assert r["twin_nmi"] == pytest.approx((0.6, 0.5, 0.7))
