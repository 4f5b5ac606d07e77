"""AppTest: the Lab says whether a torchvision dataset is on disk and refuses to launch one that
is neither there nor to be downloaded; the Activations page exports its numbers as CSV."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_app_helpers import no_exception, page, texts
from test_core_data_presence import fake_cifar10

from resnet_core import jobs
from resnet_core.data import default_data_root


@pytest.fixture
def no_runner(monkeypatch):
    monkeypatch.setattr(jobs, "ensure_runner", lambda store: None)


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    """An empty data root: the one the app and the trainer resolve (XDG_CACHE_HOME)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = Path(default_data_root())
    assert str(root).startswith(str(tmp_path))
    return root


def lab_with(dataset: str):
    at = page("lab").run()
    at.selectbox(key="lab_dataset").set_value(dataset).run()
    no_exception(at)
    return at


def test_lab_refuses_a_missing_torchvision_dataset(store, no_runner, data_root):
    at = lab_with("cifar10")
    cap = texts(at, "caption")
    assert "**cifar10** not found in" in cap and str(data_root) in cap
    assert "found in" not in cap.replace("not found in", "")
    at.button(key="lab_launch").click().run()
    no_exception(at)
    errs = texts(at, "error")
    assert "Not launched" in errs
    for must in (
        "'cifar10'",
        str(data_root),
        "cifar-10-batches-py/",
        "Download it if missing",
        ".npz",
        "ImageFolder",
        "digits",
    ):
        assert must in errs, (must, errs)
    assert store.list_ids() == []
    at.button(key="lab_launch_sweep").click().run()
    no_exception(at)
    errs = texts(at, "error")
    assert "Sweep not launched" in errs and "'cifar10'" in errs and str(data_root) in errs
    assert store.list_ids() == []
    assert not data_root.exists()  # looking wrote nothing
    # another torchvision dataset names its own files
    at.selectbox(key="lab_dataset").set_value("svhn").run()
    at.button(key="lab_launch").click().run()
    assert "train_32x32.mat" in texts(at, "error") and store.list_ids() == []


def test_lab_launches_a_missing_dataset_when_download_is_ticked(store, no_runner, data_root):
    at = lab_with("mnist")
    at.checkbox(key="lab_download").check().run()
    assert "will be downloaded" in texts(at, "caption")
    at.selectbox(key="lab_preset").set_value("smoke").run()
    at.button(key="lab_launch").click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    (rid,) = store.list_ids()
    cfg = store.run(rid).read_config()
    assert (cfg.dataset, cfg.download, cfg.data_root) == ("mnist", True, None)


def test_lab_finds_a_dataset_in_the_data_root_and_launches_it(store, no_runner, data_root):
    fake_cifar10(data_root)
    at = lab_with("cifar10")
    cap = texts(at, "caption")
    assert "**cifar10** found in" in cap and str(data_root) in cap and "not found" not in cap
    at.button(key="lab_launch").click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    (rid,) = store.list_ids()
    assert store.run(rid).read_config().dataset == "cifar10"
    # digits needs no files: no found/not-found line
    at.selectbox(key="lab_dataset").set_value("digits").run()
    assert "found in" not in texts(at, "caption")


@pytest.fixture
def downloads(monkeypatch) -> dict:
    """The bytes of every download button of an AppTest run, by file name."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    got = {}
    orig = MediaFileManager.add

    def add(self, path_or_data, mimetype, coordinates, file_name=None, is_for_static_download=False):
        if is_for_static_download and file_name:
            got[file_name] = path_or_data
        return orig(
            self,
            path_or_data,
            mimetype,
            coordinates,
            file_name=file_name,
            is_for_static_download=is_for_static_download,
        )

    monkeypatch.setattr(MediaFileManager, "add", add)
    return got


def test_activations_exports_feature_maps_and_channel_stats_as_csv(tiny_runs, downloads):
    import torch
    from PIL import Image

    import analysis.activations as aact
    from analysis.loading import load
    from app.checks import image_to_input
    from resnet_core.data import normalize

    at = page("activations").run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    labels = [b.label for b in at.get("download_button")]
    assert labels.count("Feature maps (CSV)") == 2 and labels.count("Channel statistics (CSV)") == 2
    left = at.selectbox(key="act_a").value
    stage = at.selectbox(key="act_stage").value
    feats = pd.read_csv(io.BytesIO(downloads[f"features-{stage}-{left}.csv"]))
    stats = pd.read_csv(io.BytesIO(downloads[f"channel-stats-{stage}-{left}.csv"]))
    assert list(feats.columns) == ["run_id", "layer", "channel", "y", "x", "value"]
    assert list(stats.columns) == ["run_id", "layer", "channel", "mean", "std", "min", "max", "frac_positive"]
    assert set(feats["run_id"]) == {left} and set(feats["layer"]) == {stage}
    # the numbers are the feature maps of test image 0 through the left run, every channel
    model, ds = load(tiny_runs.run(left))
    u8 = image_to_input(Image.fromarray(ds.x_test[0].numpy()[0]), ds.image_size, ds.in_channels)
    fm = aact.feature_maps(model, normalize(torch.from_numpy(u8)[None], ds.mean, ds.std)[0], stage)
    c, h, w = fm.shape
    assert len(feats) == c * h * w and len(stats) == c
    got = np.zeros_like(fm)
    got[feats["channel"], feats["y"], feats["x"]] = feats["value"]
    np.testing.assert_allclose(got, fm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["mean"], fm.reshape(c, -1).mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["frac_positive"], (fm.reshape(c, -1) > 0).mean(1), atol=1e-6)
    # another stage, another file
    at.selectbox(key="act_stage").set_value("layer3").run()
    no_exception(at)
    assert f"features-layer3-{left}.csv" in downloads
