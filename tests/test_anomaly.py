"""The anomaly scorer and its metrics, on data whose answer is known."""

from __future__ import annotations

import json
import numpy as np
import pytest
import torch

from latentlab.anomaly import AnomalyScorer, anomaly_metrics, reconstruction_error
from latentlab.errors import ConfigError


def _normal(n: int, rng) -> np.ndarray:
    """(n, 1 + 4) features: small reconstruction errors, standard-normal latents."""
    return np.column_stack([rng.gamma(4.0, 0.005, n), rng.normal(size=(n, 4))])


def _mixed(rng, n_normal=2000, n_anom=40, latent_shift=3.0, err_scale=2.0):
    anom = _normal(n_anom, rng)
    anom[:, 0] *= err_scale
    anom[:, 1:] += latent_shift
    return np.vstack([_normal(n_normal, rng), anom]), np.r_[np.zeros(n_normal), np.ones(n_anom)]


@pytest.mark.parametrize("score", ["recon", "knn", "mahalanobis", "recon+knn", "recon+mahalanobis"])
def test_every_score_separates_shifted_anomalies(score):
    rng = np.random.default_rng(0)
    scorer = AnomalyScorer(score=score).fit(_normal(3000, rng), _normal(1000, rng))
    X, y = _mixed(rng)
    m = anomaly_metrics(y, scorer.score_samples(X), scorer.threshold_)
    assert m.anomaly_fraction == pytest.approx(40 / 2040)
    floor = 0.75 if score == "recon" else 0.97  # errors only double; latents move 3 sd
    assert m.auroc > floor, (score, m)


def test_combining_recovers_an_anomaly_that_only_one_view_sees():
    rng = np.random.default_rng(1)
    train, val = _normal(3000, rng), _normal(1000, rng)
    X = _normal(2000, rng)
    y = np.zeros(2000)
    X[:20, 0] *= 6.0          # bad reconstructions, ordinary latents
    X[20:40, 1:] += 4.0       # ordinary reconstructions, unusual latents
    y[:40] = 1
    auroc = {s: anomaly_metrics(y, AnomalyScorer(score=s).fit(train, val).score_samples(X), 0).auroc
             for s in ("recon", "knn", "recon+knn")}
    assert auroc["recon+knn"] > max(auroc["recon"], auroc["knn"]) + 0.02, auroc


@pytest.mark.parametrize("threshold,param,expected", [("percentile", {"percentile": 95.0}, 0.05),
                                                      ("fpr", {"target_fpr": 0.01}, 0.01)])
def test_threshold_flags_the_chosen_share_of_fresh_normal_data(threshold, param, expected):
    rng = np.random.default_rng(2)
    scorer = AnomalyScorer(threshold=threshold, **param).fit(_normal(3000, rng), _normal(5000, rng))
    flagged = scorer.predict(_normal(20000, rng)).mean()
    assert flagged == pytest.approx(expected, abs=0.4 * expected + 0.003)


def test_without_validation_data_a_sample_is_not_its_own_neighbour():
    rng = np.random.default_rng(3)
    scorer = AnomalyScorer(score="knn", threshold="percentile", percentile=90.0).fit(_normal(3000, rng))
    assert scorer.threshold_ > 0.1  # self-distance 0 would drag it towards zero
    assert scorer.predict(_normal(10000, rng)).mean() == pytest.approx(0.10, abs=0.04)


def test_metrics_on_hand_checked_cases():
    y = np.array([0, 0, 0, 0, 1, 1])
    perfect = anomaly_metrics(y, np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9]), threshold=0.5)
    assert (perfect.auroc, perfect.auprc, perfect.precision, perfect.recall, perfect.f1) == (1, 1, 1, 1, 1)
    assert perfect.recall_at_fpr == 1.0
    # threshold 0.35 flags 0.4, 0.8, 0.9: precision 2/3, recall 1
    m = anomaly_metrics(y, np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9]), threshold=0.35)
    assert m.precision == pytest.approx(2 / 3) and m.recall == 1.0 and m.f1 == pytest.approx(0.8)
    reversed_ = anomaly_metrics(y, np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.2]), threshold=0.5)
    assert reversed_.auroc == 0.0 and reversed_.recall_at_fpr == 0.0
    with pytest.raises(ConfigError, match="both normal"):
        anomaly_metrics(np.zeros(4), np.arange(4.0), 1.0)


def test_reconstruction_errors():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, generator=g)
    recon = x.clone()
    recon[1] = (recon[1] + 0.1).clamp(0, 1)
    recon[2, 0, 5, 5] = 1.0 - recon[2, 0, 5, 5]      # one bad pixel
    mse = reconstruction_error(x, recon, "mse")
    assert mse[0] == 0 and mse[1] == pytest.approx(((recon[1] - x[1]) ** 2).mean().item())
    worst = reconstruction_error(x, recon, "max")
    assert worst[2] == pytest.approx((1 - 2 * x[2, 0, 5, 5].item()) ** 2)
    assert worst[2] > worst[1] and mse[2] < mse[1]  # the sharp defect stands out only in "max"
    s = reconstruction_error(x, recon, "ssim")
    assert s[0] == pytest.approx(0.0, abs=1e-5) and s[1] > 0 and s[2] > 0
    with pytest.raises(ConfigError, match="'psnr'"):
        reconstruction_error(x, recon, "psnr")


@pytest.mark.parametrize("params,message", [
    ({"score": "lof"}, "anomaly.score must be one of .* got 'lof'"),
    ({"threshold": "otsu"}, "anomaly.threshold must be one of .* got 'otsu'"),
    ({"k": 0}, "k must be an int >= 1, got 0"),
    ({"percentile": 100.0}, r"percentile must be in \(0, 100\), got 100.0"),
    ({"target_fpr": 0.0}, r"target_fpr must be in \(0, 1\), got 0.0"),
])
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ConfigError, match=message):
        AnomalyScorer(**params).fit(_normal(50, np.random.default_rng(0)))


def test_bad_features_are_named():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"shape \(N, 1 \+ latent_dim\), got \(10,\)"):
        AnomalyScorer().fit(np.zeros(10))
    X = _normal(50, rng)
    X[3, 2] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        AnomalyScorer().fit(X)
    with pytest.raises(ConfigError, match="k=5 needs more than 5 normal samples, got 4"):
        AnomalyScorer().fit(_normal(4, rng))
    scorer = AnomalyScorer().fit(_normal(50, rng))
    with pytest.raises(ConfigError, match="X has 3 columns, the scorer was fitted on 5"):
        scorer.score_samples(np.zeros((2, 3)))


def _digits(n_per_class: int, offset: int):
    """Fake images whose pixel [0,0,0,0] encodes a unique id, so overlaps can be found."""
    y = np.repeat(np.arange(10), n_per_class)
    x = np.zeros((len(y), 1, 2, 2), dtype=np.int64)
    x[:, 0, 0, 0] = np.arange(len(y)) + offset
    return x, y


def test_one_class_split_trains_on_normal_only_and_scores_every_test_image():
    from latentlab.anomaly import make_split

    (xtr, ytr), (xte, yte) = _digits(100, 0), _digits(50, 10_000)
    s = make_split(xtr, ytr, xte, yte, protocol="one_class", classes=[3], seed=0)
    assert s.normal_classes == [3] and s.n_contaminated == 0
    ids_fit, ids_val = set(s.x_fit[:, 0, 0, 0]), set(s.x_val[:, 0, 0, 0])
    assert len(ids_fit) + len(ids_val) == 100 and not ids_fit & ids_val
    assert all(300 <= i < 400 for i in ids_fit | ids_val)               # only training 3s
    assert len(s.x_test) == 500 and s.is_anomaly.sum() == 450           # all test images, 9 of 10 anomalous
    assert (s.is_anomaly == (s.y_test != 3)).all()


def test_leave_out_with_a_one_percent_anomaly_test_set_and_contaminated_training():
    from latentlab.anomaly import make_split

    (xtr, ytr), (xte, yte) = _digits(100, 0), _digits(100, 10_000)
    s = make_split(xtr, ytr, xte, yte, protocol="leave_out", classes=[7], anomaly_fraction=0.01,
                   train_contamination=0.02, seed=1)
    assert s.normal_classes == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert s.is_anomaly.mean() == pytest.approx(0.01, abs=0.002) and set(s.y_test[s.is_anomaly == 1]) == {7}
    train_ids = np.concatenate([s.x_fit, s.x_val])[:, 0, 0, 0]
    assert s.n_contaminated == 18 and ((700 <= train_ids) & (train_ids < 800)).sum() == 18
    assert train_ids.max() < 10_000                                       # no test image in training
    again = make_split(xtr, ytr, xte, yte, protocol="leave_out", classes=[7], anomaly_fraction=0.01,
                       train_contamination=0.02, seed=1)
    assert (again.x_test == s.x_test).all() and (again.x_fit == s.x_fit).all()


@pytest.mark.parametrize("kw,message", [
    ({"protocol": "two_class", "classes": [1]}, "protocol must be one of .* got 'two_class'"),
    ({"protocol": "one_class", "classes": [11]}, r"classes must be a non-empty list from \[0, .*9\], got \[11\]"),
    ({"protocol": "one_class", "classes": list(range(10))}, "both normal and anomalous classes"),
    ({"protocol": "one_class", "classes": [1], "anomaly_fraction": 1.5}, "anomaly_fraction must be null or in"),
    ({"protocol": "one_class", "classes": [1], "anomaly_fraction": 0.99}, "needs .* test anomalies, only 450 exist"),
    ({"protocol": "one_class", "classes": [1], "train_contamination": 0.5}, "train_contamination must be in"),
])
def test_bad_protocols_are_named(kw, message):
    from latentlab.anomaly import make_split

    (xtr, ytr), (xte, yte) = _digits(100, 0), _digits(50, 10_000)
    with pytest.raises(ConfigError, match=message):
        make_split(xtr, ytr, xte, yte, **kw)


def test_anomaly_figures(tmp_path):
    from latentlab import plots

    rng = np.random.default_rng(0)
    X, y = _mixed(rng)
    scores = AnomalyScorer().fit(_normal(3000, rng)).score_samples(X)
    images = rng.random((len(y), 1, 8, 8))
    paths = [plots.score_histogram(scores, y, 1.0, tmp_path / "hist.png"),
             plots.roc_pr_curves((y, scores), [(y[::2], scores[::2]), (y[1::2], scores[1::2])], tmp_path / "curves.png",
                                 0.5),
             plots.anomaly_extremes(images, images * 0.5, scores, y, tmp_path / "extremes.png", n=6, classes=y)]
    for p in paths:
        assert p.stat().st_size > 10_000 and not list(tmp_path.glob(".*.tmp.png"))


def test_leave_out_stages_with_contaminated_training_and_every_test_image(tmp_path, tiny_cfg):
    """The three anomaly stages in process: leave-out of digit 9, 5% of the training pool
    anomalies, a percentile threshold, no unbalanced draws."""
    from latentlab.stages.anomaly_evaluate import anomaly_evaluate
    from latentlab.stages.anomaly_score import anomaly_score
    from latentlab.stages.anomaly_model import anomaly_model
    from latentlab.stages.anomaly_train import anomaly_train
    from latentlab.stages.download import download
    from latentlab.config import compose, validate
    from omegaconf import OmegaConf

    from conftest import TINY

    cfg = OmegaConf.to_container(compose([*TINY, "anomaly=leave_out", "anomaly.train_contamination=0.05",
                                          "anomaly.threshold=percentile", "anomaly.percentile=90",
                                          "anomaly.anomaly_fraction=null", "anomaly.score=recon+mahalanobis",
                                          "anomaly.max_epochs=3"]),
                                 resolve=True)
    validate(cfg)
    data, model, hist, scores = (tmp_path / f for f in ("p.npz", "m.pt", "h.csv", "s.npz"))
    download(cfg, data)
    anomaly_model(cfg, tmp_path / "model.yaml")
    line = anomaly_train(cfg, data, tmp_path / "model.yaml", model, hist)
    assert "classes [0, 1, 2, 3, 4, 5, 6, 7, 8]" in line and "of them anomalies" in line
    assert ": 3 epochs on " in line  # anomaly.max_epochs, not the clustering's train.max_epochs (5 in TINY)
    anomaly_score(cfg, data, model, scores, tmp_path / "rows.csv", tmp_path / "detector.pkl")
    with np.load(scores) as s:
        # 9s are the anomalies; the threshold flags ~10% of validation normals
        assert (s["is_anomaly"] == (s["y"] == 9)).all() and len(s["y"]) == 500
        assert 0.05 < (s["val_scores"] > s["threshold"]).mean() <= 0.12
        # the per-row table a user acts on: every test image, its score, whether it is flagged, its class
        import pandas as pd

        rows = pd.read_csv(tmp_path / "rows.csv", dtype={"id": str, "label": str})
        assert list(rows.columns) == ["id", "anomaly_score", "flagged", "label", "is_anomaly"] and len(rows) == 500
        assert np.allclose(rows["anomaly_score"], s["scores"]) and (rows["flagged"] == (s["scores"] > s["threshold"])).all()
        assert (rows["is_anomaly"] == (rows["label"] == "9")).all()
    # `latentlab predict` applies the same detector (scorer, threshold) to new images: the test
    # split's first 20, given as a user's .npy, score as the stage scored them
    from latentlab import export
    from latentlab.data import Prepared

    np.save(tmp_path / "new.npy", Prepared.load(data).x_test[:20, 0])
    nowhere = tmp_path / "no-clustering"
    said = export.predict(tmp_path / "new.npy", tmp_path / "new.csv",
                          export.Run(nowhere / "summary.json", nowhere, nowhere, nowhere, model, tmp_path / "detector.pkl"))
    new = pd.read_csv(tmp_path / "new.csv")
    assert list(new.columns) == ["id", "anomaly_score", "anomaly_flagged"] and "flagged by the anomaly branch" in said
    assert np.allclose(new["anomaly_score"], rows["anomaly_score"][:20], atol=1e-6)
    assert (new["anomaly_flagged"] == rows["flagged"][:20]).all()
    anomaly_evaluate(cfg, data, model, hist, scores, tmp_path / "e/metrics.json", tmp_path / "e/scores",
                     tmp_path / "e/plots", tmp_path / "e")
    m = json.loads((tmp_path / "e/metrics.json").read_text())
    assert m["protocol"] == "leave_out" and m["normal_classes"] == list(range(9))
    expected = round(m["n_fit"] / 0.9 * 0.05)  # 5% of the pool (fit + validation) is leaked anomalies
    assert abs(m["n_contaminated"] - expected) <= 2 and "unbalanced" not in m
    rows = {f.stem: json.loads(f.read_text()) for f in (tmp_path / "e/scores").iterdir()}  # DVC's metrics
    assert set(rows) == {"test", "raw_knn", "raw_lof", "raw_iforest"}
    assert rows["test"]["auroc"] == pytest.approx(m["test"]["auroc"], abs=1e-4)
    assert rows["test"]["fpr"] == pytest.approx(m["test_false_positives"]["rate"], abs=1e-4)
    # the raw twins: scored on the same 500 test images, the gain is over the best of them
    best = max(m["raw"][n]["auroc"] for n in ("raw_knn", "raw_lof", "raw_iforest"))
    assert m["over_raw"]["auroc"]["gain"] == pytest.approx(m["test"]["auroc"] - best)
    assert rows["test"]["gain_auroc"] == pytest.approx(m["test"]["auroc"] - best, abs=1e-4)
    # (with 5% of the training pool 9s, the pixels' neighbours of a test 9 are often 9s: no bound on the twins)
    assert all(0.0 <= m["raw"][n][k] <= 1.0 for n in m["raw"] for k in ("auroc", "auprc")), m["raw"]
    fp = m["test_false_positives"]
    assert fp["interval95"][0] <= fp["rate"] <= fp["interval95"][1] and fp["target"] == pytest.approx(0.10)
    assert fp["validation_normals"] == round((m["n_fit"] + fp["validation_normals"]) * 0.1)
    assert fp["promise"] == f"within 2x of the target: {fp['rate'] <= 2 * fp['target']}"  # >= 100 validation normals
    import mlflow

    run = mlflow.MlflowClient().search_runs(
        [mlflow.MlflowClient().get_experiment_by_name("latentlab-anomaly").experiment_id])[0]
    assert run.info.run_name == "repro-mnist-mlp-d10-leftout9-seed0"  # a stage's run, as DVC's
    assert run.data.params["anomaly.train_contamination"] == "0.05"
    assert run.data.metrics["raw_lof/auroc"] == pytest.approx(m["raw"]["raw_lof"]["auroc"], abs=1e-4)
    assert run.data.metrics["test/false_positive_rate_high"] >= run.data.metrics["test/false_positive_rate"]


def test_raw_twins_fit_on_normal_samples_only_and_separate_shifted_anomalies():
    from latentlab.anomaly import raw_scores

    rng = np.random.default_rng(0)
    fit = rng.normal(size=(300, 6))
    test = np.vstack([rng.normal(size=(200, 6)), rng.normal(size=(20, 6)) + 4.0])
    y = np.r_[np.zeros(200), np.ones(20)]
    from sklearn.metrics import roc_auc_score

    s = raw_scores(fit, test, k=5, seed=0)
    assert set(s) == {"raw_knn", "raw_lof", "raw_iforest"}
    assert all(roc_auc_score(y, v) > 0.95 for v in s.values()), {n: roc_auc_score(y, v) for n, v in s.items()}
    # the test rows play no part in the fit: scoring them alone gives the same numbers
    alone = raw_scores(fit, test[-20:], k=5, seed=0)
    assert np.allclose(alone["raw_knn"], s["raw_knn"][-20:]) and np.allclose(alone["raw_lof"], s["raw_lof"][-20:])
    # images: a PCA of the pixels fitted on the normal images
    imgs = rng.integers(0, 40, size=(120, 1, 8, 8), dtype=np.uint8)
    odd = imgs[:10].copy()
    odd[:, :, 2:6, 2:6] = 255
    si = raw_scores(imgs[:100], np.concatenate([imgs[100:], odd]), k=5, seed=0)
    assert all(roc_auc_score(np.r_[np.zeros(20), np.ones(10)], v) > 0.95 for v in si.values())


def test_the_false_positive_interval_is_clopper_pearson():
    from latentlab.anomaly import fpr_interval

    lo, hi = fpr_interval(0, 100)
    assert lo == 0.0 and hi == pytest.approx(0.0362, abs=1e-4)  # the "rule of three" region: 3.7/n
    lo, hi = fpr_interval(10, 1000)
    assert lo == pytest.approx(0.0048, abs=2e-4) and hi == pytest.approx(0.0183, abs=2e-4)


@pytest.mark.parametrize("shape", [(64, 1, 28, 28), (16, 3, 20, 24)])
def test_ssim_gives_the_numbers_of_torchmetrics(shape):
    from torchmetrics.functional.image import structural_similarity_index_measure as reference

    from latentlab.anomaly import ssim

    g = torch.Generator().manual_seed(0)
    a = torch.rand(shape, generator=g)
    b = (a + 0.3 * torch.randn(shape, generator=g)).clamp(0, 1)
    want = reference(b, a, data_range=1.0, reduction="none")
    assert torch.allclose(ssim(b, a), want, atol=1e-5)
    assert torch.allclose(ssim(a, a), torch.ones(shape[0]), atol=1e-6)


def test_the_conformal_threshold_holds_its_rate_where_a_quantile_of_few_normals_overshoots():
    """Over many draws of n held-out normals, the share of fresh normals flagged averages at most
    the target (split conformal), where np.percentile's interpolated quantile flags more."""
    from latentlab.anomaly import conformal_threshold

    rng = np.random.default_rng(0)
    fresh = np.sort(rng.normal(size=200_000))
    rate = lambda t: 1.0 - np.searchsorted(fresh, t, side="right") / len(fresh)  # noqa: E731
    for n in (14, 100, 600):
        conf, interp = [], []
        for _ in range(400):
            val = rng.normal(size=n)
            conf.append(rate(conformal_threshold(val, 0.01)))
            interp.append(rate(np.percentile(val, 99.0)))
        assert np.mean(conf) <= 0.0105 + (0.06 if n < 99 else 0.0), (n, np.mean(conf))  # n < 99: the max, no promise
        assert np.mean(conf) <= np.mean(interp), (n, np.mean(conf), np.mean(interp))
    assert conformal_threshold(np.arange(100.0), 0.01) == 99.0  # the 100th of 100: ceil(101 * 0.99)
