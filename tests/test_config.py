"""conf/ is the source of truth; params.yaml must equal its composed default; bad values fail early."""

import copy

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from latentlab.config import compose, load_params, validate
from latentlab.errors import ConfigError

from conftest import ROOT


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
    ("cluster.k", 1, "cluster.k must be an int >= 2, got 1"),
    ("cluster.pca", 11, "cluster.pca=11 components must be in [1, model.latent_dim=10]"),
    ("cluster.pca", 1.5, "cluster.pca=1.5 as an explained-variance fraction must be in (0, 1)"),
    ("protocol", "test", "protocol must be one of ['all', 'train_test'], got 'test'"),
    ("train.batch_size", 0, "train.batch_size must be an int >= 1, got 0"),
    ("optimizer._target_", "builtins.eval", "optimizer._target_ must be one of"),
    ("data.name", "cifar", "data.name must be one of"),
    ("model.activation", "swish", "model.activation must be one of"),
    ("baselines.pca_components", 1000, "baselines.pca_components must be an int in [1, 784], got 1000"),
    ("train.val_fraction", 0.0, "train.val_fraction must be a number in (0.0, 0.5], got 0.0"),
])
def test_invalid_values_name_key_and_value(cfg, key, value, message):
    bad = copy.deepcopy(cfg)
    node = bad
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ConfigError) as err:
        validate(bad)
    assert message in str(err.value)


def test_unknown_model_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="model/transformer"):
        compose(["model=transformer"])


def test_bad_params_file_fails_before_any_work(tmp_path, capsys):
    import subprocess
    import sys

    p = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text().replace("latent_dim: 10", "latent_dim: 0")
    p.write_text(text)
    with pytest.raises(ConfigError, match="latent_dim must be an int >= 1, got 0"):
        load_params(p)
    # Through a stage script: one clear line, exit code 2, no traceback, no output.
    r = subprocess.run([sys.executable, str(ROOT / "pipelines" / "train.py"), "--data", "x.npz",
                        "--model", "m.pt", "--history", "h.csv"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: model.latent_dim must be an int >= 1, got 0"
    assert not (tmp_path / "m.pt").exists()
