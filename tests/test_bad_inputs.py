"""Bad input, table-driven, on every surface: command-line flags, --config files, the Python
API, the app's widgets (AppTest on the Lab page) and uploads (AppTest on the Activations page's
file uploader).

Each case must give a clear one-line message naming the field and what is accepted, create no
run, and write nothing outside the run store (checked on a snapshot of the whole tmp folder,
which is also the working directory, HOME and cache of the command).
"""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from faultlib import TINY, cli_flags, no_traceback, snapshot

from resnet_core.__main__ import main as cli_main


def flags(**over):
    return ["train", *cli_flags(**over), "--quiet"]


# --- command-line flags ------------------------------------------------------------------------
# (id, argv without --runs-dir, substrings the message must hold: the field and what is accepted)
CLI = [
    ("depth not 6n+2", flags(model="cifar_resnet21"), ["model", "6n+2"]),
    ("unknown model", flags(model="resnet21"), ["model", "resnet20"]),
    ("negative lr", flags(lr=-0.1), ["--lr", "> 0"]),
    ("NaN lr", flags(lr="nan"), ["--lr", "finite"]),
    ("lr not a number", flags(lr="fast"), ["--lr", "float"]),
    ("batch 0", flags(batch_size=0), ["--batch-size", ">= 1"]),
    ("batch larger than the dataset", flags(batch_size=5000), ["batch", "training images"]),
    ("unknown dataset", flags(dataset="imagenet_fake"), ["dataset", "accepted", "digits"]),
    ("missing dataset path", flags(dataset="/no/such/data.npz"), ["dataset", "does not exist", ".npz"]),
    ("iterations 0", flags(iterations=0), ["--iterations", ">= 1"]),
    ("momentum above 1", flags(momentum=1.5), ["--momentum", "<= 1"]),
    ("threads 0", flags(threads=0), ["--threads", ">= 1"]),
    ("unknown shortcut", flags(shortcut="D"), ["shortcut", "A, B, C"]),
    ("unknown schedule", flags(schedule="linear"), ["schedule", "steps", "cosine"]),
    ("unknown preset", flags() + ["--preset", "fast"], ["preset", "quick"]),
    ("val split >= training set", flags(val_split=5000), ["val_split", "training images"]),
    ("subset smaller than the classes", flags(subset=3), ["subset", "10 classes"]),
    ("run id with ..", ["resume", "../../etc"], ["run id", "..", "letters, digits"]),
    ("run id with a slash", ["cancel", "a/b"], ["run id", "path separators"]),
]


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """cwd, HOME and caches inside tmp_path; returns (store dir, snapshot-before)."""
    for d in ("cwd", "home", "cache", "runs"):
        (tmp_path / d).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("RESNET_LAB_RUNS_DIR", str(tmp_path / "runs"))
    store = tmp_path / "runs"
    return store, snapshot(tmp_path, skip=(store,))


def _check_message(msg: str, must: list[str]):
    assert msg.strip(), "no message"
    low = msg.lower()
    missing = [m for m in must if m.lower() not in low]
    assert not missing, f"message lacks {missing}: {msg!r}"
    assert no_traceback(msg)


def _nothing_written(tmp_path, store, before):
    assert snapshot(tmp_path, skip=(store,)) == before, "something was written outside the store"
    runs = [p.name for p in store.iterdir() if not p.name.startswith(".")] if store.exists() else []
    assert runs == [], f"a bad input left a run folder: {runs}"


def _cli(argv, store, capsys) -> tuple[int, str]:
    try:
        code = cli_main([*argv, "--runs-dir", str(store)])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv,must", [c[1:] for c in CLI], ids=[c[0] for c in CLI])
def test_bad_command_line_flag(argv, must, sandbox, tmp_path, capsys):
    store, before = sandbox
    code, err = _cli(argv, store, capsys)
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    _check_message(err, must)
    _nothing_written(tmp_path, store, before)


# --- --config files ------------------------------------------------------------------------------
def _cfg(**over):
    from resnet_core import TrainConfig

    d = TrainConfig(**TINY).to_dict()
    d.update(over)
    return json.dumps(d)


def _without(*keys):
    from resnet_core import TrainConfig

    d = TrainConfig(**TINY).to_dict()
    for k in keys:
        d.pop(k)
    return json.dumps(d)


CONFIG = [
    ("missing file", None, ["--config", "does not exist"]),
    ("not JSON", '{"model": "resnet20", "lr": ', ["--config", "not valid JSON"]),
    ("a JSON list", "[1, 2, 3]", ["--config", "JSON object of TrainConfig fields"]),
    ("mistyped field name", _cfg(learning_rate=0.1), ["learning_rate", "accepted fields", "lr"]),
    ("lr as a string", _cfg(lr="0.1"), ["lr", "finite number"]),
    ("NaN lr", _cfg().replace('"lr": 0.1', '"lr": NaN'), ["lr", "finite number"]),
    ("batch size a fraction", _cfg(batch_size=1.5), ["batch_size", "integer"]),
    ("missing budget fields", _without("iterations", "epochs"), ["epochs", "iterations"]),
    ("depth not 6n+2", _cfg(model="cifar_plain21"), ["model", "6n+2"]),
    ("recorders a string", _cfg(recorders="analysis"), ["recorders", "module:Class"]),
    ("download not a bool", _cfg(download="yes"), ["download", "true or false"]),
    ("dataset not a .npz", _cfg(dataset="/etc/hostname"), ["dataset", ".npz"]),
    ("config with --preset", "PRESET", ["--config", "--preset"]),
]


@pytest.mark.parametrize("text,must", [c[1:] for c in CONFIG], ids=[c[0] for c in CONFIG])
def test_bad_config_file(text, must, sandbox, tmp_path, capsys):
    store, before = sandbox
    path = tmp_path / "cwd" / "bad.json"
    extra = []
    if text == "PRESET":
        text, extra = _cfg(), ["--preset", "quick"]
    if text is not None:
        path.write_text(text)
    before = snapshot(tmp_path, skip=(store,))
    code, err = _cli(["train", "--config", str(path), "--quiet", *extra], store, capsys)
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    _check_message(err, must)
    _nothing_written(tmp_path, store, before)


# --- the Python API: TrainConfig, load_dataset, RunStore ----------------------------------------
def _npz(tmp_path, **arrays):
    p = tmp_path / "cwd" / "ds.npz"
    with open(p, "wb") as f:
        np.savez(f, **arrays)
    return str(p)


def _good_arrays(n=20):
    rng = np.random.default_rng(0)
    return dict(
        x_train=rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8),
        y_train=np.arange(n) % 2,
        x_test=rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8),
        y_test=np.arange(4) % 2,
    )


def _imagefolder(tmp_path, classes=("a",), bad=False):
    from PIL import Image

    root = tmp_path / "cwd" / "folder"
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(2):
                if bad:
                    (d / f"{i}.png").write_bytes(b"this is not a png")
                else:
                    Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(d / f"{i}.png")
    return str(root)


def api_config(**over):
    """A thunk: the inputs are made first, then the call runs on a snapshot."""

    def prepare(t):
        from resnet_core import TrainConfig

        return lambda: TrainConfig(**{**TINY, **over}).validate()

    return prepare


def api_data(make):
    def prepare(t):
        from resnet_core import load_dataset

        path = make(t)
        return lambda: load_dataset(path)

    return prepare


def _write(t, name, data):
    (t / "cwd" / name).write_bytes(data)
    return str(t / "cwd" / name)


API = [
    ("TrainConfig depth not 6n+2", api_config(model="cifar_resnet9"), ["model", "6n+2"]),
    ("TrainConfig NaN lr", api_config(lr=float("nan")), ["lr", "finite"]),
    ("TrainConfig negative weight decay", api_config(weight_decay=-1e-4), ["weight_decay", ">= 0"]),
    ("TrainConfig unknown precision", api_config(precision="fp8"), ["precision", "fp32", "bf16"]),
    (
        "malformed .npz",
        api_data(lambda t: _write(t, "x.npz", b"PK\x03\x04junk")),
        ["not a readable .npz", "x_train"],
    ),
    (
        ".npz missing arrays",
        api_data(lambda t: _npz(t, x_train=_good_arrays()["x_train"])),
        ["missing array", "y_train", "x_test"],
    ),
    (
        ".npz float images",
        api_data(lambda t: _npz(t, **{**_good_arrays(), "x_train": np.zeros((20, 8, 8, 3), np.float32)})),
        ["x_train", "uint8"],
    ),
    (
        ".npz negative labels",
        api_data(lambda t: _npz(t, **{**_good_arrays(), "y_train": -np.ones(20, np.int64)})),
        ["y_train", "0..k-1"],
    ),
    (
        ".npz with pickled objects",
        api_data(lambda t: _npz(t, **{**_good_arrays(), "y_test": np.array([{}, {}, {}, {}], dtype=object)})),
        ["not a readable .npz"],
    ),
    (
        "ImageFolder with one class",
        api_data(lambda t: _imagefolder(t, ("only",))),
        ["1 class folder", "at least 2"],
    ),
    (
        "ImageFolder with a non-image",
        api_data(lambda t: _imagefolder(t, ("a", "b"), bad=True)),
        ["not a readable image"],
    ),
    (
        "RunStore run id with ..",
        lambda t: lambda: __import__("resnet_core").RunStore(t / "runs").run("../runs"),
        ["run id", "not accepted", "letters, digits"],
    ),
]


@pytest.mark.parametrize("prepare,must", [c[1:] for c in API], ids=[c[0] for c in API])
def test_bad_python_api_input(prepare, must, sandbox, tmp_path):
    from resnet_core import ConfigError, DataError, StoreError

    store, _ = sandbox
    call = prepare(tmp_path)
    before = snapshot(tmp_path, skip=(store,))
    with pytest.raises((ConfigError, DataError, StoreError)) as ei:
        call()
    _check_message(str(ei.value), must)
    _nothing_written(tmp_path, store, before)


# --- uploads (the Activations page's file uploader, and app.checks.load_upload behind it) ------
def _png(w, h, claim=None):
    """A PNG of w x h (or only its header claiming `claim` pixels)."""
    if claim is not None:

        def chunk(t, d):
            return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", *claim, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b"")
        )
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 20, 30)).save(buf, "PNG")
    return buf.getvalue()


UPLOADS = [
    ("not an image (text)", b"hello, this is a text file\n" * 10, ["not a readable image", "png", "jpeg"]),
    ("a PDF", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", ["not a readable image", "png"]),
    (
        "an SVG",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        ["not a readable image", "png"],
    ),
    ("50-megapixel image", _png(0, 0, claim=(8000, 6250)), ["50.0 megapixels", "limit is 16"]),
    ("larger than the byte limit", b"\x89PNG" + b"\x00" * (9 * 1024 * 1024), ["mb", "limit"]),
    ("empty file", b"", ["empty"]),
    ("truncated PNG", _png(64, 64)[:60], ["image"]),
    ("a .npz uploaded as an image", b"PK\x03\x04" + b"\x00" * 100, ["not a readable image"]),
]


@pytest.mark.parametrize("data,must", [c[1:] for c in UPLOADS], ids=[c[0] for c in UPLOADS])
def test_bad_upload_on_the_activations_page(data, must, tiny_runs, tmp_path, monkeypatch):
    """Uploaded through the Activations page's file uploader (AppTest), on a store of real runs."""
    from test_app_helpers import no_exception, page, texts

    for d in ("cwd", "home", "cache"):
        (tmp_path / d).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    at = page("activations").run()
    no_exception(at)
    at.radio(key="act_source").set_value("upload").run()
    before = snapshot(tmp_path, skip=(tiny_runs.root,))
    at.file_uploader(key="act_upload").set_value(("upload.png", data, "image/png")).run()
    no_exception(at)
    errs = texts(at, "error")
    assert "Upload refused" in errs, errs
    _check_message(errs, must)
    assert snapshot(tmp_path, skip=(tiny_runs.root,)) == before, "an upload wrote outside the store"
    assert at.title[0].value  # the page is still whole


def test_upload_check_refuses_the_same_files_directly():
    from app.checks import InputError, load_upload

    for _, data, must in UPLOADS:
        with pytest.raises(InputError) as ei:
            load_upload(data)
        _check_message(str(ei.value), must)


# --- the app's widgets (AppTest on the Lab page) ------------------------------------------------
PATH_CHOICE = "a path (.npz or ImageFolder)…"


def _set(key, value, kind="number_input"):
    return lambda at: getattr(at, kind)(key=key).set_value(value)


def _path(text):
    def f(at):
        at.selectbox(key="lab_dataset").set_value(PATH_CHOICE).run()
        at.text_input(key="lab_data_path").set_value(text)

    return f


APP = [
    ("depth not 6n+2", _set("lab_depth", 21), ["6n+2", "nearest"]),
    ("depth beyond 1202", _set("lab_depth", 2000), ["depth", "1202"]),
    ("batch 0", _set("lab_batch", 0), ["batch_size", ">= 1"]),
    ("negative lr", _set("lab_lr", -1.0), ["lr", "> 0"]),
    ("lr 0", _set("lab_lr", 0.0), ["lr", "> 0"]),
    ("iterations 0", _set("lab_iterations", 0), ["iterations", ">= 1"]),
    ("width 0", _set("lab_width", 0), ["width", ">= 1"]),
    ("dataset path outside the data folders", _path("/etc/passwd"), ["outside", "RESNET_LAB_DATA_DIRS"]),
    ("dataset path with ..", _path("../../../../etc/shadow"), ["outside"]),
    ("dataset path missing", None, ["does not exist"]),
    ("dataset path not .npz", "NOTNPZ", [".npz"]),
]


@pytest.mark.parametrize("setup,must", [c[1:] for c in APP], ids=[c[0] for c in APP])
def test_bad_app_widget_input(setup, must, sandbox, tmp_path, monkeypatch):
    from test_app_helpers import no_exception, page, texts

    from resnet_core import jobs

    store, before = sandbox
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("RESNET_LAB_DATA_DIRS", str(data))
    monkeypatch.setattr(jobs, "ensure_runner", lambda st: None)
    if setup is None:
        setup = _path(str(data / "missing.npz"))
    elif setup == "NOTNPZ":
        (data / "notes.txt").write_text("x")
        setup = _path(str(data / "notes.txt"))
    before = snapshot(tmp_path, skip=(store,))
    at = page("lab").run()
    setup(at)
    at.run()
    at.button(key="lab_launch").click().run()
    no_exception(at)
    errs = texts(at, "error")
    assert "Not launched" in errs, errs
    _check_message(errs, must)
    assert at.title[0].value == "Lab"  # the page is still whole
    _nothing_written(tmp_path, store, before)


def test_at_least_thirty_bad_inputs_five_per_surface():
    sizes = {"cli": len(CLI), "config": len(CONFIG), "api": len(API), "upload": len(UPLOADS), "app": len(APP)}
    assert all(n >= 5 for n in sizes.values()), sizes
    assert sum(sizes.values()) >= 30, sizes
