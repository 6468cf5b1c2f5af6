"""Config: presets, files, overrides, validation messages naming the field, derived values."""

import pytest

from selfee.config import PRESETS, SelfeeConfig
from selfee.errors import ConfigError


def test_defaults_are_the_papers_recipe():
    c = SelfeeConfig()
    assert c.optim.batch_size == 256 and c.optim.base_lr == 0.05 and c.optim.steps == 20000
    assert c.optim.momentum == 0.9 and c.optim.weight_decay == 1e-4 and c.optim.warmup_fraction == 0.025
    assert c.loss.cld and c.loss.cld_lambda == 2.0 and c.loss.clusters == 10 and c.loss.kmeans_iters == 10
    assert c.loss.temperature == 0.07 and not c.loss.byol and c.loss.byol_decay == 0.99
    assert c.augment.crop_scale == (0.7, 1.0) and c.augment.rotation_deg == 37.0
    assert (c.augment.hflip_p, c.augment.vflip_p, c.augment.turbo_p) == (0.5, 0.5, 0.5)
    assert c.model.arch == "resnet50" and (c.model.proj_dim, c.model.pred_hidden, c.model.cld_dim) == (2048, 512, 1024)
    assert c.train.checkpoint_every == 5000 and c.model.init == "imagenet"


def test_presets():
    fly = SelfeeConfig.load(preset="fly")
    mouse = SelfeeConfig.load(preset="mouse")
    assert fly.data.input_size == (224, 224) and fly.data.frame_interval == 1 and not fly.data.inner_shuffle
    assert mouse.data.input_size == (256, 192) and mouse.data.frame_interval == 2 and mouse.data.inner_shuffle
    with pytest.raises(ConfigError, match="unknown preset 'cat'"):
        SelfeeConfig.load(preset="cat")
    assert set(PRESETS) >= {"fly", "mouse"}


def test_derived_values_are_computed_not_stored():
    c = SelfeeConfig.load(overrides=["optim.batch_size=512", "optim.base_lr=0.025", "optim.steps=1000"])
    assert c.optim.lr == pytest.approx(0.05)
    assert c.optim.warmup_steps == 25
    # AMP does not change the batch size (the original doubled it silently)
    assert SelfeeConfig.load(overrides=["train.amp=off"]).optim.batch_size == 256


def test_file_then_overrides(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "fly"\n[optim]\nbatch_size = 64\nsteps = 10\n[data]\ninput_size = [96, 128]\n')
    c = SelfeeConfig.load(toml, overrides=["optim.steps=20"])
    assert c.optim.batch_size == 64 and c.optim.steps == 20 and c.data.input_size == (96, 128)
    assert c.data.frame_interval == 1  # from the file's preset
    yml = tmp_path / "run.yaml"
    yml.write_text("loss:\n  cld: false\n  byol: true\n")
    c = SelfeeConfig.load(yml)
    assert not c.loss.cld and c.loss.byol


def test_round_trip_through_dict_and_yaml(tmp_path):
    c = SelfeeConfig.load(preset="fly", overrides=["data.preprocess.roi=[1,2,30,40]"])
    assert SelfeeConfig.from_dict(c.to_dict()) == c
    p = tmp_path / "c.yaml"
    p.write_text(c.to_yaml())
    assert SelfeeConfig.load(p) == c


@pytest.mark.parametrize(
    "override, field",
    [
        ("optim.batch_size=1", "optim.batch_size"),
        ("optim.batch_size=abc", "optim.batch_size"),
        ("data.frame_interval=0", "data.frame_interval"),
        ("data.input_size=[10, 10]", "data.input_size"),
        ("augment.crop_scale=[0.9, 0.5]", "augment.crop_scale"),
        ("augment.hflip_p=1.5", "augment.hflip_p"),
        ("train.amp=fp8", "train.amp"),
        ("model.arch=vgg16", "model.arch"),
        ("loss.temperature=0", "loss.temperature"),
        ("data.preprocess.roi=[0,0,-5,5]", "data.preprocess.roi"),
        ("loss.cld=maybe", "loss.cld"),
    ],
)
def test_invalid_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        SelfeeConfig.load(overrides=[override])


def test_batch_smaller_than_the_clusters_fails_at_load(tmp_path):
    # k-means needs at least loss.clusters samples in a batch: say so at load, not at the first step
    with pytest.raises(ConfigError, match=r"'optim.batch_size' \(8\) must be >= 'loss.clusters' \(10\)"):
        SelfeeConfig.load(overrides=["optim.batch_size=8"])
    toml = tmp_path / "run.toml"
    toml.write_text("[optim]\nbatch_size = 16\n[loss]\nclusters = 20\n")
    with pytest.raises(ConfigError, match="'loss.clusters'"):
        SelfeeConfig.load(toml)
    assert SelfeeConfig.load(overrides=["optim.batch_size=8", "loss.cld=false"]).optim.batch_size == 8  # no k-means
    assert SelfeeConfig.load(overrides=["optim.batch_size=10"]).loss.clusters == 10  # equal is enough


def test_unknown_field_suggests_the_right_one(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        SelfeeConfig.load(overrides=["optim.batchsize=3"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\n")
    with pytest.raises(ConfigError, match="bad.toml: cannot parse"):
        SelfeeConfig.load(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        SelfeeConfig.load(tmp_path / "missing.toml")


def test_config_is_frozen():
    c = SelfeeConfig()
    with pytest.raises(AttributeError):
        c.optim.steps = 3  # type: ignore[misc]


def test_per_video_preprocessing_overrides_merge_with_default():
    c = SelfeeConfig.load(
        overrides=["data.preprocess.invert=true", "data.videos={a.mp4: {start_s: 5}, b: {invert: false}}"]
    )
    assert c.data.preprocess_for("x/a.mp4").start_s == 5 and c.data.preprocess_for("x/a.mp4").invert
    assert not c.data.preprocess_for("y/b.avi").invert
    assert c.data.preprocess_for("other.mp4").invert and c.data.preprocess_for("other.mp4").start_s == 0
