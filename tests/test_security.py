"""Security: pickles are refused, no shell, the app listens on localhost only, uploads are
size-limited, and no user-supplied name leads out of the run store."""

from __future__ import annotations

import ast
import socket
import struct
import subprocess
import sys
import time
import tomllib
import zlib
from pathlib import Path

import pytest
import torch
from faultlib import REPO, no_traceback, snapshot, subprocess_env, tiny_config, train_reference, wait_for

from resnet_core import RunStore, StoreError
from resnet_core.__main__ import main as cli_main
from resnet_core.train import CheckpointError, load_checkpoint, load_model

CODE_DIRS = ("resnet_core", "analysis", "app", "benchmarks")


class Payload:
    """Unpickling this touches a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _malicious_checkpoint(path: Path, marker: Path, good: dict | None = None):
    state = dict(good or {}, model={"x": torch.zeros(1)}, evil=Payload(marker))
    torch.save(state, path)


def test_payload_would_run_without_weights_only(tmp_path):
    """Sanity check of the payload itself: a plain pickle load runs it."""
    marker = tmp_path / "pwned"
    _malicious_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_malicious_checkpoint_is_refused_not_executed(tmp_path, capsys):
    run = train_reference(tmp_path / "runs", tiny_config(iterations=10, eval_every=10))
    marker = tmp_path / "pwned"
    good = load_checkpoint(run.checkpoint_path("last"))
    _malicious_checkpoint(run.checkpoint_path("last"), marker, good)
    # the loader, the app's model loader, and the CLI's resume all refuse it
    with pytest.raises(CheckpointError, match="could not be loaded safely"):
        load_checkpoint(run.checkpoint_path("last"))
    with pytest.raises(CheckpointError):
        load_model(run)
    run.write_status(state="interrupted")
    assert cli_main(["resume", run.id, "--runs-dir", str(run.root), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "could not be loaded safely" in err and no_traceback(err)
    assert not marker.exists(), "the pickle's code ran"
    assert run.read_status()["state"] == "failed"


def _py_files():
    for d in CODE_DIRS:
        yield from sorted((REPO / d).rglob("*.py"))


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(f) -> str:
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


def test_every_torch_load_uses_weights_only_and_no_shell_anywhere():
    files = list(_py_files())
    assert len(files) > 10
    bad = []
    n_loads = 0
    for p in files:
        tree = ast.parse(p.read_text(), filename=str(p))
        for c in _calls(tree):
            name = _dotted(c.func)
            kw = {k.arg: k.value for k in c.keywords}
            where = f"{p.relative_to(REPO)}:{c.lineno}"
            if name == "torch.load":
                n_loads += 1
                v = kw.get("weights_only")
                if not (isinstance(v, ast.Constant) and v.value is True):
                    bad.append(f"{where} torch.load without weights_only=True")
            if "shell" in kw and not (isinstance(kw["shell"], ast.Constant) and kw["shell"].value is False):
                bad.append(f"{where} shell=...")
            bare = isinstance(c.func, ast.Name) and c.func.id in ("eval", "exec")
            if bare or name in ("os.system", "os.popen", "pickle.load", "pickle.loads"):
                bad.append(f"{where} {name}")
            if name.endswith("np.load") or name == "numpy.load":
                v = kw.get("allow_pickle")
                if isinstance(v, ast.Constant) and v.value is True:
                    bad.append(f"{where} np.load(allow_pickle=True)")
    assert n_loads >= 2
    assert not bad, bad


def test_app_binds_localhost_and_limits_uploads():
    conf = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert conf["server"]["address"] in ("127.0.0.1", "localhost")
    limit_mb = conf["server"]["maxUploadSize"]
    assert 0 < limit_mb <= 50
    from app.checks import MAX_UPLOAD_BYTES

    assert MAX_UPLOAD_BYTES <= limit_mb * 1024 * 1024


def _listening(port: int) -> list[str]:
    """Local addresses listening on `port`, from /proc/net/tcp{,6}."""
    out = []
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            addr, p = f[1].rsplit(":", 1)
            if int(p, 16) == port and f[3] == "0A":
                out.append(addr)
    return out


@pytest.mark.slow
def test_real_server_listens_on_loopback_only(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = subprocess_env(tmp_path, RESNET_LAB_RUNS_DIR=tmp_path / "runs")
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app/main.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        addrs = wait_for(lambda: _listening(port), 90, every=0.2, what="the server to listen")
        # 0100007F is 127.0.0.1; 00000000 / :: would be every interface
        assert all(a in ("0100007F", "00000000000000000000000001000000") for a in addrs), addrs
    finally:
        p.terminate()
        p.wait(timeout=30)


def _png_header(w: int, h: int) -> bytes:
    """A PNG that claims w x h pixels (one tiny IDAT): decoders must refuse it from the header."""

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_uploads_are_size_and_pixel_limited():
    from app.checks import MAX_UPLOAD_BYTES, InputError, load_upload

    with pytest.raises(InputError, match="limit"):
        load_upload(b"\x00" * (MAX_UPLOAD_BYTES + 1))
    t0 = time.time()
    with pytest.raises(InputError, match="megapixels"):
        load_upload(_png_header(8000, 6250))  # 50 megapixels in ~100 bytes
    assert time.time() - t0 < 2, "the pixel count must be refused before decoding"


# --- no user-supplied name leaves the store -------------------------------------------------
EVIL_IDS = [
    "..",
    "../x",
    "../../etc/passwd",
    "/etc/passwd",
    "a/../../b",
    "..\\x",
    "x/..",
    ".hidden",
    "a" * 200,
    "",
    "run\x00id",
    "~root",
]


@pytest.mark.parametrize("rid", EVIL_IDS)
def test_run_ids_that_would_leave_the_store_are_refused(tmp_path, rid, capsys):
    root = tmp_path / "store" / "runs"
    root.mkdir(parents=True)
    (tmp_path / "x").mkdir()  # a sibling the traversal would reach
    before = snapshot(tmp_path)
    store = RunStore(root)
    with pytest.raises(StoreError, match="not accepted|no run"):
        store.run(rid)
    with pytest.raises(StoreError):
        store.delete(rid)
    from resnet_core import jobs

    for fn in (jobs.cancel, lambda s, r: jobs.resume(s, r, start_runner=False)):
        with pytest.raises(StoreError):
            fn(store, rid)
    if "\x00" not in rid and rid:
        for cmd in ("resume", "cancel"):
            assert cli_main([cmd, rid, "--runs-dir", str(root)]) == 2
            err = capsys.readouterr().err
            assert err.startswith("error: ") and no_traceback(err)
    from app.checks import InputError, check_run

    with pytest.raises(InputError):
        check_run(store, rid)
    assert snapshot(tmp_path) == before, "something was written"


@pytest.mark.parametrize("name", ["../../../x", "/etc/passwd", "..", "a/b", "last\x00"])
def test_checkpoint_names_cannot_leave_the_run(tmp_path, name):
    run = train_reference(tmp_path / "runs", tiny_config(iterations=5, eval_every=5))
    outside = tmp_path / "x.pt"
    torch.save({"model": {}}, outside)
    with pytest.raises((StoreError, ValueError)):
        run.checkpoint_path(name)
    with pytest.raises((StoreError, ValueError)):
        load_model(run, checkpoint=name)


def test_app_refuses_dataset_paths_outside_the_data_folders(tmp_path, monkeypatch):
    from app.checks import DATA_DIRS_ENV, InputError, check_dataset

    allowed = tmp_path / "data"
    (allowed / "ds" / "train").mkdir(parents=True)
    (allowed / "ds" / "test").mkdir(parents=True)
    monkeypatch.setenv(DATA_DIRS_ENV, str(allowed))
    assert check_dataset(str(allowed / "ds")) == str((allowed / "ds").resolve())
    for t in (
        "/etc",
        "/etc/passwd",
        str(allowed / ".." / ".." / "etc"),
        "../../../../etc/x.npz",
        str(allowed / "ds" / ".." / ".." / "outside.npz"),
    ):
        with pytest.raises(InputError):
            check_dataset(t)
