"""conf/ is the source of truth; params.yaml must equal its composed default; bad values fail early."""


from pathlib import Path

import re

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from latentlab.config import compose, load_params, validate
from latentlab.errors import ConfigError

from conftest import ROOT, with_value


def test_params_yaml_is_the_composed_default():
    composed = OmegaConf.to_container(compose(), resolve=True)
    on_disk = OmegaConf.to_container(OmegaConf.load(ROOT / "params.yaml"), resolve=True)
    assert on_disk == composed, "params.yaml drifted from conf/: run `make params`"


def test_every_group_option_composes_and_validates():
    for override in ["model=conv", "model=mlp", "data=digits", "data=fashion_mnist", "data=kmnist",
                     "optimizer=sgd", "protocol=train_test", "cluster.pca=0.9", "cluster.pca=5"]:
        validate(compose([override]))


@pytest.fixture
def cfg():
    return OmegaConf.to_container(compose(), resolve=True)


@pytest.mark.parametrize("key, value, message", [
    ("model.latent_dim", 0, "model.latent_dim must be an int >= 1, got 0"),
    ("model.latent_dim", 2.5, "model.latent_dim must be an int >= 1, got 2.5"),
    ("model._target_", "os.system", "model._target_ must be one of"),
    ("cluster.k", 1, "cluster.k must be an int >= 2 or null, got 1"),
    ("cluster.pca", 33, "cluster.pca=33 components must be in [1, model.latent_dim=32]"),
    ("cluster.pca", 1.5, "cluster.pca=1.5 as an explained-variance fraction must be in (0, 1)"),
    ("protocol", "test", "protocol must be one of ['all', 'train_test'], got 'test'"),
    ("train.batch_size", 0, "train.batch_size must be an int >= 1, got 0"),
    ("train.min_steps", -1, "train.min_steps must be an int >= 0, got -1"),
    ("optimizer._target_", "builtins.eval", "optimizer._target_ must be one of"),
    ("data.name", "cifar", "data.name must be one of"),
    ("model.activation", "swish", "model.activation must be one of"),
    ("baselines.pca_components", 1000, "baselines.pca_components must be an int in [1, 784], got 1000"),
    ("train.val_fraction", 0.0, "train.val_fraction must be a number in (0.0, 0.5], got 0.0"),
    ("finetune.targets", "probs", "finetune.targets must be one of ['hard', 'soft'], got 'probs'"),
    ("finetune.ema", 1.0, "finetune.ema must be a number in [0.0, 1.0), got 1.0"),
    ("finetune.mixup", -1, "finetune.mixup must be a number in [0.0, 100.0], got -1"),
    ("finetune.restart", "yes", "finetune.restart must be true or false, got 'yes'"),
    ("finetune.views", 0, "finetune.views must be an int in [1, 64], got 0"),
    ("finetune.channels", [], "finetune.channels must be a non-empty list of positive ints, got []"),
    ("finetune.channels", [16, 0], "finetune.channels must be a non-empty list of positive ints, got [16, 0]"),
    ("finetune.channels", [8, 8, 8, 8, 8], "finetune.channels=[8, 8, 8, 8, 8]: 5 pooling blocks need images of at "
                                          "least 32x32, got 28x28"),
])
def test_invalid_values_name_key_and_value(cfg, key, value, message):
    with pytest.raises(ConfigError) as err:
        validate(with_value(cfg, key, value))
    assert message in str(err.value)


def test_unknown_model_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="model/transformer"):
        compose(["model=transformer"])


def test_bad_params_file_fails_before_any_work(tmp_path, capsys):
    import subprocess
    import sys

    import yaml

    p = tmp_path / "params.yaml"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"]["latent_dim"] = 0
    p.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ConfigError, match="^model.latent_dim must be an int >= 1, got 0"):
        load_params(p)
    # Through a stage script: one clear line, exit code 2, no traceback, no output.
    r = subprocess.run([sys.executable, "-m", "latentlab.stages.train", "--data", "x.npz",
                        "--model-out", "m.pt", "--history-out", "h.csv"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: model.latent_dim must be an int >= 1, got 0"
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("overrides,message", [
    (["anomaly.normal=[]"], "anomaly.normal must be a non-empty list of mnist classes [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "
                            "got []"),
    (["anomaly.normal=[0,1,2,3,4,5,6,7,8,9]"], "covers every mnist class: nothing would be anomalous"),
    (["anomaly.normal=[10]"], "anomaly.normal must be a non-empty list of mnist classes"),
    (["anomaly=leave_out", "anomaly.anomalous=[0,1,2,3,4,5,6,7,8,9]"], "covers every mnist class: nothing would "
                                                                        "be normal"),
    (["anomaly=leave_out", "anomaly.normal=[1]"], "anomaly.normal must be null under protocol leave_out"),
    (["anomaly.train_contamination=0.5"], "anomaly.train_contamination must be a number in [0.0, 0.5), got 0.5"),
    (["anomaly.train_contamination=-0.1"], "anomaly.train_contamination must be a number in [0.0, 0.5), got -0.1"),
    (["anomaly.score=lof"], "anomaly.score must be one of"),
    (["anomaly.max_epochs=0"], "anomaly.max_epochs must be an int >= 1, got 0"),
    (["anomaly.latent_dim=0"], "anomaly.latent_dim must be an int >= 1 or null, got 0"),
    (["anomaly.error=l1"], "anomaly.error must be one of ['auto', 'mse', 'max', 'ssim'], got 'l1'"),
    (["anomaly.target_fpr=0"], "anomaly.target_fpr must be a number in (0.0, 1.0), got 0"),
    (["anomaly.anomaly_fraction=0.7"], "anomaly.anomaly_fraction must be a number in (0.0, 0.5], got 0.7"),
    (["task=detect"], "task must be one of ['cluster', 'anomaly'], got 'detect'"),
])
def test_anomaly_settings_are_checked_before_any_work(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides))
    assert message in str(err.value)


def test_the_anomaly_branch_keeps_its_own_autoencoder_and_bottleneck():
    from latentlab.config import task_model

    cfg = compose(["model.latent_dim=16"])
    assert task_model(cfg, "cluster") == cfg.model and cfg.model._target_.endswith("ConvAutoencoder")
    # its own architecture (dense by default, whatever the clustering trains) and bottleneck
    assert task_model(cfg, "anomaly") == {**cfg.anomaly.model, "latent_dim": cfg.anomaly.latent_dim, "hidden": "auto"}
    assert task_model(cfg, "anomaly")["_target_"].endswith("MLPAutoencoder")
    none = compose(["anomaly.model.latent_dim=24", "anomaly.latent_dim=null"])
    validate(none)
    assert task_model(none, "anomaly")["latent_dim"] == 24  # null: its model's
    conv = compose(["model@anomaly.model=conv", "anomaly.model.channels=[8,16]"])
    validate(conv)
    assert task_model(conv, "anomaly")["channels"] == [8, 16] and task_model(conv, "cluster")["channels"] != [8, 16]
    assert "hidden" not in task_model(conv, "anomaly")  # anomaly.hidden sizes a dense model only
    wide = compose(["anomaly.hidden=null"])
    assert task_model(wide, "anomaly")["hidden"] == [500, 500, 2000]  # null: anomaly.model's own


@pytest.mark.parametrize(("override", "says"), [
    ("model.latent_dim=5", "the anomaly branch trains anomaly.latent_dim=10"),
    ("++model.latent_dim=5", "the anomaly branch trains anomaly.latent_dim=10"),
    ("model=conv", "the anomaly branch trains its own anomaly.model (mlp); override model@anomaly.model=conv instead"),
    ("model.channels=[8,16]", "the anomaly branch trains its own anomaly.model (mlp); override anomaly.model.channels instead"),
])
def test_an_override_the_anomaly_task_would_ignore_is_refused(override, says):
    from latentlab.config import check_overrides

    cfg = compose(["task=anomaly", override])
    with pytest.raises(ConfigError) as err:
        check_overrides(cfg, ["task=anomaly", override])
    assert f"{override} has no effect under task=anomaly: {says}" in str(err.value)
    # Under the clustering task it reaches the model; the anomaly branch's own keys pass.
    check_overrides(compose([override]), [override])
    check_overrides(cfg, ["task=anomaly", "anomaly.latent_dim=5", "anomaly.model.hidden=[64]",
                          "model@anomaly.model=conv"])
    # the README's table command names model=mlp, which is what the anomaly branch trains anyway
    check_overrides(compose(["task=anomaly", "model=mlp"]), ["task=anomaly", "model=mlp"])


def test_both_anomaly_protocols_compose():
    one = compose([]).anomaly
    assert (one.protocol, one.normal, one.anomalous) == ("one_class", None, None)  # null: the most frequent class
    out = compose(["anomaly=leave_out", "anomaly.anomalous=[3,5]"])
    validate(out)
    assert (out.anomaly.protocol, out.anomaly.normal, list(out.anomaly.anomalous)) == ("leave_out", None, [3, 5])
    assert out.anomaly.score == one.score  # leave_out inherits the other settings


def test_too_few_normal_images_skip_the_branch_with_the_fix_named(tmp_path, tiny_cfg):
    # The clustering branch's work is done by then: the anomaly branch is skipped, saying why
    # and what to change, in its summary lines and metrics; it does not fail the pipeline.
    import json

    from latentlab.stages.anomaly_evaluate import anomaly_evaluate
    from latentlab.stages.anomaly_score import anomaly_score
    from latentlab.stages.anomaly_train import anomaly_train
    from latentlab.stages.download import download

    cfg = {**tiny_cfg, "data": {**tiny_cfg["data"], "max_train": 300}, "anomaly": {**tiny_cfg["anomaly"], "normal": [0]}}
    data = tmp_path / "prepared.npz"
    download(cfg, data)
    why = r"only \d+ normal training images \(classes \[0\]\); at least 64 .* anomaly=unsupervised"
    said = anomaly_train(cfg, data, tmp_path / "never-read.yaml", tmp_path / "model.pt", tmp_path / "history.csv")
    assert re.search(f"anomaly branch skipped: {why}", said)
    said = anomaly_score(cfg, data, tmp_path / "model.pt", tmp_path / "scores.npz", tmp_path / "rows.csv",
                         tmp_path / "detector.pkl")
    assert re.search(why, said)
    out = tmp_path / "evaluate"
    said = anomaly_evaluate(cfg, data, tmp_path / "model.pt", tmp_path / "history.csv", tmp_path / "scores.npz",
                            out / "metrics.json", out / "scores", out / "plots", out / "curves")
    assert re.search(why, said) and re.search(why, json.loads((out / "metrics.json").read_text())["skipped"])
    assert json.loads((out / "scores" / "test.json").read_text()) == {"skipped": 1}


def test_normal_classes_by_label_value_or_index_and_the_most_frequent_by_default():
    import numpy as np

    from latentlab.config import anomaly_plan

    y = np.array([0] * 5 + [1] * 9 + [2] * 3)
    names = ["setosa", "versicolor", "virginica"]
    one = {"protocol": "one_class", "normal": None, "anomalous": None}
    assert anomaly_plan(one, y, names)[:2] == ("one_class", [1])  # the most frequent
    assert anomaly_plan({**one, "normal": ["virginica", 0]}, y, names)[:2] == ("one_class", [0, 2])
    with pytest.raises(ConfigError, match=r"'virginca' is neither .* setosa \(0\), versicolor \(1\), virginica \(2\)"):
        anomaly_plan({**one, "normal": ["virginca"]}, y, names)
    # a numeric label value wins over an index: labels 1..10 sort as numbers, and [1] is the label 1
    assert anomaly_plan({**one, "normal": [1]}, y, ["1", "2", "10"])[:2] == ("one_class", [0])
    unlabelled = np.full(10, -1)
    assert anomaly_plan(one, unlabelled, None).protocol == "unsupervised"
    with pytest.raises(ConfigError, match=r"no labels: use anomaly=unsupervised"):
        anomaly_plan({**one, "normal": [0]}, unlabelled, None)


def test_two_runs_started_in_the_same_second_get_their_own_folders():
    # A shared folder let one run's finished training delete the other's resume checkpoints.
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from latentlab.config import CONF_DIR

    with initialize_config_dir(config_dir=str(Path(CONF_DIR).resolve()), version_base="1.3"):
        a, b = (hydra_compose(config_name="config", return_hydra_config=True) for _ in range(2))
        assert a.hydra.run.dir != b.hydra.run.dir
        assert a.hydra.sweep.dir != b.hydra.sweep.dir


def test_k_is_the_label_count_or_chosen_without_labels_and_said_so():
    import numpy as np

    from latentlab.config import resolve_k

    c = compose([]).cluster
    assert c.k is None and c.select_k == "silhouette"  # no constant: MNIST's 10 is its label count
    c = OmegaConf.to_container(c)
    y = np.repeat([4, 7, 9], 5)
    assert resolve_k(c, y) == (3, None, "k=3: the number of distinct label values (cluster.k=N sets another)")
    assert resolve_k({**c, "k": 5}, y)[:2] == (5, None)
    k, criterion, why = resolve_k(c, np.full(15, -1))
    assert (k, criterion) == (None, "silhouette") and "k chosen by silhouette over k in [2, 15] (no labels" in why
    with pytest.raises(ConfigError, match="cluster.k=null needs labels .* cluster.select_k"):
        resolve_k({**c, "select_k": None}, np.full(15, -1))
