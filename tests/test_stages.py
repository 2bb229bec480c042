"""The stage functions in-process on one small real run (the session's ``small`` fixture):
what each writes, and the defects users met, each with its own check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import with_value
from latentlab import metric_names as M
from latentlab import metrics
from latentlab.config import validate
from latentlab.errors import ConfigError, LatentlabError


def test_self_labelling_off_keeps_the_clusterings_it_would_have_refined(small, tmp_path):
    """`latentlab data=digits finetune.rounds=0` crashed once: both self-labellings then pass
    their clustering through, the autoencoder's and the pixels'."""
    from latentlab.stages.finetune import finetune
    from latentlab.stages.raw_selflabel import raw_selflabel

    cfg, p = small
    c = with_value(cfg, "finetune.rounds", 0)
    validate(c)
    line = finetune(c, p["data"], p["model"], p["assignments"], p["latents"], tmp_path / "ae.npz", tmp_path / "clf.pt")
    assert "finetune.rounds=0" in line
    assert "finetune.rounds=0" in raw_selflabel(c, p["data"], p["baselines"], tmp_path / "raw.npz")
    with np.load(tmp_path / "ae.npz") as f, np.load(p["assignments"]) as a:
        assert np.array_equal(f[M.AUTOENCODER_SELFLABEL], a[M.AUTOENCODER])
    with np.load(tmp_path / "raw.npz") as f, np.load(p["baselines"]) as b:
        assert np.array_equal(f[M.RAW_SELFLABEL], b[M.RAW_CLUSTER])


def test_the_autoencoder_methods_twin_follows_the_cluster_config(small, tmp_path):
    """raw_cluster is the `autoencoder` method with pixels in place of latents. It used to run
    UMAP whatever the config: under cluster=kmeans the AE's k-means then faced a UMAP twin."""
    from latentlab.stages.baselines import baselines

    cfg, _ = small
    c = with_value(with_value(cfg, "cluster.manifold", "none"), "cluster.algorithm", "kmeans")
    validate(c)
    baselines(c, small[1]["data"], tmp_path / "b.npz")
    with np.load(tmp_path / "b.npz") as b:  # no manifold, k-means: the PCA(50) + k-means of the pixels
        assert np.array_equal(b[M.RAW_CLUSTER], b[M.RAW_PCA_KMEANS])
    with np.load(small[1]["baselines"]) as b:  # the default's UMAP + GMM is another clustering
        assert not np.array_equal(b[M.RAW_CLUSTER], b[M.RAW_PCA_KMEANS])


def test_the_autoencoder_method_starts_from_the_trained_encoder(small):
    """autoencoder_selflabel trains the autoencoder's own encoder (its weights, copied), not a
    fresh network; its twin's network has never seen the autoencoder."""
    import torch

    from latentlab import finetune as ft
    from latentlab import models

    cfg, p = small
    ae = models.load(p["model"])
    net = ft.encoder_classifier(ae, cfg["model"]["latent_dim"], 10, seed=0)
    for (name, a), b in zip(ae.encoder.state_dict().items(), net.encoder.state_dict().values()):
        assert torch.equal(a, b), name
    assert net.encoder is not ae.encoder  # trained further as a copy: the autoencoder itself stays
    assert isinstance(ft.fresh_classifier((1, 28, 28), 10, seed=0, channels=[16, 32]), ft.ConvNet)
    assert isinstance(ft.fresh_classifier((30,), 10, seed=0, channels=[16, 32]), ft.MLPNet)


def test_evaluate_scores_each_autoencoder_method_beside_its_raw_twin(small, tmp_path):
    from latentlab.stages.evaluate import evaluate

    cfg, p = small
    line = evaluate(cfg, p["data"], p["model"], p["history"], p["latents"], p["all"], tmp_path / "m.json",
                    tmp_path / "scores", tmp_path / "plots", classifier=p["classifier"], dec_model=p["dec_model"])
    m = json.loads((tmp_path / "m.json").read_text())
    # the run holds what `latentlab predict` assigns with, where the pipeline writes it (DEC is on here)
    import mlflow

    run_id = line.split("MLflow run ")[1].split()[0]
    for stage, key in (("finetune", "classifier"), ("dec", "dec_model")):
        assert [a.path for a in mlflow.MlflowClient().list_artifacts(run_id, stage)] == [f"{stage}/{p[key].name}"]
    # DVC's metrics: a small file per method, so that `dvc metrics show` prints a row each
    assert sorted(f.name for f in (tmp_path / "scores").iterdir()) == sorted(f"{x}.json" for x in M.METHODS)
    for method in M.METHODS:
        row = json.loads((tmp_path / "scores" / f"{method}.json").read_text())
        assert row["acc"] == pytest.approx(m[method]["acc"], abs=1e-4)
        assert set(row) == ({"acc", "nmi", "gain_acc", "gain_nmi", "twin"} if method in M.TWINS else {"acc", "nmi"})
        if method in M.TWINS:
            assert row["twin"] == M.TWINS[method] and row["gain_acc"] == pytest.approx(m["gain"][method]["acc"],
                                                                                        abs=1e-4)
    assert set(m["gain"]) == set(M.TWINS)
    for method, twin in M.TWINS.items():
        assert m["gain"][method]["twin"] == twin
        assert m["gain"][method]["acc"] == pytest.approx(m[method]["acc"] - m[twin]["acc"])
        assert m["gain"][method]["nmi"] == pytest.approx(m[method]["nmi"] - m[twin]["nmi"])
        assert f"over {twin})" in line
    assert all(M.is_raw(t) for t in M.TWINS.values()) and not any(M.is_raw(a) for a in M.TWINS)
    # and against the strongest raw method, whichever that is (a twin can be a weak one)
    assert set(m["over_raw"]) == set(M.AUTOENCODER_METHODS)
    for method, g in m["over_raw"].items():
        for s in ("acc", "nmi"):
            best = max(m[r][s] for r in M.RAW_METHODS)
            assert m[g[f"best_raw_{s}"]][s] == best and g[s] == pytest.approx(m[method][s] - best)
    lead = max(M.AUTOENCODER_METHODS, key=lambda a: m[a]["acc"])
    assert line.split(" | ")[-2].startswith(f"best autoencoder method {lead}: ")
    g = m["over_raw"][lead]
    assert ("NOT ahead" in line) is not (g["acc"] > 0 and g["nmi"] > 0)
    assert f"{g['acc']:+.3f} ACC over {g['best_raw_acc']}" in line
    # the scores of what the export stage hands over (export.method's), for ranking runs by
    exported = {k: v for k, v in m["exported"].items() if k != "mistakes"}
    assert exported == {"method": M.FINAL, "acc": m[M.FINAL]["acc"], "nmi": m[M.FINAL]["nmi"]}
    # and its most frequent mistakes, as counts and as a figure of their images
    from latentlab.data import Prepared

    y = Prepared.load(p["data"]).split(cfg["protocol"])[3]
    with np.load(p["selflabel"]) as a:
        as_class = metrics.match(y, a[M.FINAL])  # the clusters renamed to their classes
    found = m["exported"]["mistakes"]
    assert 0 < len(found) <= 4 and [f["n"] for f in found] == sorted((f["n"] for f in found), reverse=True)
    for f in found:
        assert f["true"] != f["as"] and f["n"] == int(((y == f["true"]) & (as_class == f["as"])).sum())
    assert (tmp_path / "plots" / "mistakes.png").stat().st_size > 0


def test_a_stalled_training_says_so(small, tmp_path):
    """A training that never leaves the mean image is named in the summary line."""
    from latentlab.stages.train import train

    cfg, p = small
    c = with_value(with_value(cfg, "optimizer.lr", 1e-7), "train.max_epochs", 1)
    line = train(c, p["data"], tmp_path / "m.pt", tmp_path / "h.csv")
    assert "STALLED: no better than outputting the mean sample" in line
    assert "STALLED" not in p["train_line"]  # the same training at the configured rate


def test_evaluate_tags_a_stalled_run_and_scores_label_free_in_one_space(small, tmp_path):
    """Runs with different latent spaces compare: the label-free scores do not depend on them."""
    import mlflow

    from latentlab.stages.evaluate import evaluate

    cfg, p = small
    with np.load(p["latents"]) as z:
        other = {k: z[k] for k in z.files}
    rng = np.random.default_rng(0)
    other["z_train"] = rng.normal(size=(len(other["z_train"]), 3)).astype(np.float32)  # another latent space
    other["z_test"] = rng.normal(size=(len(other["z_test"]), 3)).astype(np.float32)
    other["mse_train"] = other["mse_train"] * 0 + 1.0  # and a reconstruction worse than the mean image
    other["mse_test"] = other["mse_test"] * 0 + 1.0
    np.savez(tmp_path / "other.npz", **other)
    results = []
    for i, latents in enumerate((p["latents"], tmp_path / "other.npz")):
        line = evaluate(cfg, p["data"], p["model"], p["history"], latents, p["all"],
                        tmp_path / f"m{i}.json", tmp_path / f"scores{i}", tmp_path / f"plots{i}")
        results.append((line, json.loads((tmp_path / f"m{i}.json").read_text())))
    (ok_line, ok), (bad_line, bad) = results
    for m in M.METHODS:
        assert ok[m]["silhouette"] == pytest.approx(bad[m]["silhouette"]), m
    assert not ok["train"]["stalled"] and bad["train"]["stalled"]
    assert "STALLED" in bad_line and "STALLED" not in ok_line
    runs = mlflow.MlflowClient().search_runs(
        [mlflow.MlflowClient().get_experiment_by_name("latentlab").experiment_id], order_by=["start_time ASC"])
    assert [r.data.tags["training.stalled"] for r in runs] == ["false", "true"]


def test_evaluate_leaves_no_half_written_folder_when_a_figure_fails(small, tmp_path, monkeypatch):
    from latentlab import plots
    from latentlab.stages.evaluate import evaluate

    cfg, p = small

    def broken(*args, **kwargs):
        raise RuntimeError("a figure that cannot be drawn")

    monkeypatch.setattr(plots, "contingency_heatmap", broken)
    with pytest.raises(RuntimeError):
        evaluate(cfg, p["data"], p["model"], p["history"], p["latents"], p["all"],
                 tmp_path / "metrics.json", tmp_path / "scores", tmp_path / "plots")
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "plots").exists()
    assert not (tmp_path / "scores").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def breast_cancer(tmp_path):
    """scikit-learn's bundled breast-cancer table as a CSV, `target` the label (1: benign)."""
    from sklearn.datasets import load_breast_cancer

    path = tmp_path / "breast_cancer.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(path, index=False)
    return path


def _table_anomaly(csv, *more):
    from omegaconf import OmegaConf

    from conftest import TINY
    from latentlab.config import compose

    return OmegaConf.to_container(compose([*TINY, "data=table", f"data.path={csv}", "data.label=target",
                                           "task=anomaly", "anomaly.normal=[1]", "anomaly.max_epochs=5", *more]),
                                  resolve=True)


def test_the_anomaly_branch_works_on_a_labelled_table_with_its_defaults(breast_cancer, tmp_path):
    """It refused the image-only default error after training, divided features by 255 and
    could not draw vectors; now every default fits feature vectors."""
    from latentlab.sweep import run_pipeline

    m = run_pipeline(_table_anomaly(breast_cancer), tmp_path / "job")
    assert m["recon_measure"] == "mse" and m["normal_classes"] == [1]
    assert m["test"]["auroc"] > 0.6, m["test"]  # malignant tumours are the unfamiliar ones
    plots = tmp_path / "job" / "anomaly" / "evaluate" / "plots"
    assert {p.name for p in plots.iterdir()} == {"score_histogram.png", "loss_curve.png", "roc_pr.png",
                                                 "extremes.png"}


def test_an_image_only_error_on_a_table_is_refused_before_training(breast_cancer):
    with pytest.raises(ConfigError, match=r"anomaly.error=ssim compares images, but data.name=table gives feature "
                                          r"vectors: use anomaly.error=auto, mse or max"):
        validate(_table_anomaly(breast_cancer, "anomaly.error=ssim"))


@pytest.mark.e2e  # ~45 s: in the fast tier it took `make test` past 5 minutes; CI runs it in make test-e2e
def test_a_conv_autoencoder_goes_through_every_stage_and_its_encoder_reloads(small, tmp_path):
    """model=conv: trained, embedded, clustered, its encoder self-labelled,
    evaluated and logged; the channels-last layout changes no number: the saved encoder and
    classifier give what the same weights give on plain NCHW tensors."""
    import torch

    from latentlab import finetune as ft
    from latentlab import models
    from latentlab.stages.cluster import cluster
    from latentlab.stages.embed import embed
    from latentlab.stages.evaluate import evaluate
    from latentlab.stages.finetune import finetune
    from latentlab.stages.train import train

    cfg, p = small
    decoder_hidden = None  # the dense decoder's shapes: tests/test_models.py
    cfg = with_value(cfg, "model", {"_target_": "latentlab.models.ConvAutoencoder", "latent_dim": 8,
                                    "channels": [8, 16], "activation": "relu", "input_dropout": 0.1,
                                    "decoder_hidden": decoder_hidden})
    cfg = with_value(with_value(cfg, "train.max_epochs", 1), "finetune.rounds", 1)
    validate(cfg)
    q = {k: tmp_path / f"{k}.{ext}" for k, ext in (("model", "pt"), ("history", "csv"), ("latents", "npz"),
                                                    ("assignments", "npz"), ("selflabel", "npz"),
                                                    ("classifier", "pt"))}
    train(cfg, p["data"], q["model"], q["history"])
    embed(cfg, p["data"], q["model"], q["latents"])
    cluster(cfg, p["data"], q["latents"], q["assignments"])
    finetune(cfg, p["data"], q["model"], q["assignments"], q["latents"], q["selflabel"], q["classifier"])
    line = evaluate(cfg, p["data"], q["model"], q["history"], q["latents"],
                    [q["assignments"], q["selflabel"], p["baselines"], p["raw_selflabel"]], tmp_path / "m.json",
                    tmp_path / "scores", tmp_path / "plots")
    assert "autoencoder_selflabel ACC" in line

    x = torch.rand(5, 1, 28, 28)
    ae, clf = models.load(q["model"]), ft.load(q["classifier"])
    plain = models.ConvAutoencoder((1, 28, 28), 8, (8, 16), input_dropout=0.1, decoder_hidden=decoder_hidden)
    plain.load_state_dict(ae.state_dict())
    plain.encoder = torch.nn.Sequential(*plain.encoder)  # no layout change: NCHW all the way
    plain = plain.to(memory_format=torch.contiguous_format).eval()
    with torch.no_grad():
        torch.testing.assert_close(ae.encode(x), plain.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ae(x), plain(x), rtol=1e-5, atol=1e-5)
        assert clf(x).shape == (5, 10)


def test_the_stages_write_one_method_each_or_nothing_when_off(small, tmp_path):
    """dec.enabled=false (the default): both stages write an empty file and evaluate scores
    neither method; on, each writes its method for every scored point."""
    from latentlab.stages.dec import dec
    from latentlab.stages.evaluate import evaluate
    from latentlab.stages.raw_dec import raw_dec

    cfg, p = small
    with np.load(p["dec"]) as a, np.load(p["raw_dec"]) as b, np.load(p["assignments"]) as c:
        assert a.files == [M.AUTOENCODER_DEC] and b.files == [M.RAW_DEC]
        assert len(a[M.AUTOENCODER_DEC]) == len(b[M.RAW_DEC]) == len(c[M.AUTOENCODER])
    off = with_value(cfg, "dec.enabled", False)
    assert "dec.enabled=false" in dec(off, p["data"], p["model"], p["assignments"], tmp_path / "dec.npz",
                                      tmp_path / "dec.pt")
    assert "dec.enabled=false" in raw_dec(off, p["data"], p["baselines"], tmp_path / "raw_dec.npz")
    for f in ("dec.npz", "raw_dec.npz"):
        with np.load(tmp_path / f) as a:
            assert a.files == []
    files = [*p["all"][:4], tmp_path / "dec.npz", tmp_path / "raw_dec.npz"]
    line = evaluate(off, p["data"], p["model"], p["history"], p["latents"], files, tmp_path / "m.json",
                    tmp_path / "scores", tmp_path / "plots")
    m = json.loads((tmp_path / "m.json").read_text())
    assert not any(x in m or x in m["gain"] or x in m["over_raw"] or x in line for x in M.OPTIONAL)
    assert sorted(f.stem for f in (tmp_path / "scores").iterdir()) == sorted(set(M.METHODS) - set(M.OPTIONAL))


def test_the_stages_score_the_test_split_under_train_test(small, tmp_path):
    """protocol=train_test: fitted on train, the test images each get their nearest centre.
    The train images' clusters are the session run's (under `all`, train comes first)."""
    from latentlab.data import Prepared
    from latentlab.stages.dec import dec
    from latentlab.stages.raw_dec import raw_dec

    cfg, p = small
    c = with_value(with_value(cfg, "protocol", "train_test"), "dec.steps", 5)
    n_train, n_test = (len(part) for part in Prepared.load(p["data"]).split("train_test")[1::2])
    with np.load(p["assignments"]) as a, np.load(p["baselines"]) as b:
        np.savez(tmp_path / "a.npz", fit_labels=a["fit_labels"][:n_train])
        np.savez(tmp_path / "b.npz", **{f"fit_{M.RAW_CLUSTER}": b[M.RAW_CLUSTER][:n_train]})
    dec(c, p["data"], p["model"], tmp_path / "a.npz", tmp_path / "dec.npz", tmp_path / "dec.pt")
    raw_dec(c, p["data"], tmp_path / "b.npz", tmp_path / "raw_dec.npz")
    with np.load(tmp_path / "dec.npz") as a, np.load(tmp_path / "raw_dec.npz") as b:
        assert len(a[M.AUTOENCODER_DEC]) == len(b[M.RAW_DEC]) == n_test


def test_the_export_gives_the_method_export_method_names(small, tmp_path):
    """The exported `cluster` column is autoencoder_selflabel's by default and DEC's under
    export.method=autoencoder_dec (the k-means preset), whose saved model reassigns the
    fitted images as the stage did (what `latentlab predict` applies to new files)."""
    import pandas as pd

    from latentlab import dec as deep
    from latentlab.data import Prepared
    from latentlab.stages.export import export

    cfg, p = small
    tables = {}
    for method, src in ((M.AUTOENCODER_SELFLABEL, p["selflabel"]), (M.AUTOENCODER_DEC, p["dec"])):
        c = with_value(cfg, "export.method", method)
        validate(c)
        line = export(c, p["data"], p["latents"], p["selflabel"], p["dec"], tmp_path / f"{method}.csv",
                      tmp_path / f"{method}.json")
        assert f" {method} clusters" in line
        assert json.loads((tmp_path / f"{method}.json").read_text())["method"] == method
        tables[method] = pd.read_csv(tmp_path / f"{method}.csv")
        with np.load(src) as a:  # under protocol=all the rows are the scored images in order
            assert np.array_equal(tables[method]["cluster"].to_numpy(), a[method])
    assert not np.array_equal(tables[M.AUTOENCODER_SELFLABEL]["cluster"], tables[M.AUTOENCODER_DEC]["cluster"])
    x_fit = Prepared.load(p["data"]).split(cfg["protocol"])[0]
    assert np.array_equal(deep.load(p["dec_model"]).predict(x_fit), tables[M.AUTOENCODER_DEC]["cluster"])
    # DEC named but its stage turned off: a clear error, no table
    empty = tmp_path / "empty.npz"
    np.savez(empty)
    with pytest.raises(LatentlabError, match="export.method=autoencoder_dec, but its stage wrote no assignments"):
        export(with_value(cfg, "export.method", M.AUTOENCODER_DEC), p["data"], p["latents"], p["selflabel"], empty,
               tmp_path / "x.csv", tmp_path / "x.json")
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.json").exists()
