"""--download fetches CIFAR-10 through torchvision, here from a fake server on 127.0.0.1."""

import hashlib
import http.server
import io
import pickle
import tarfile
import threading

import numpy as np
import pytest
import torchvision.datasets as tvd

from resnet_core.data import DataError, load_dataset

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _tiny_cifar_archive():
    """A CIFAR-10-format archive with 20 images per batch."""
    rng = np.random.default_rng(0)
    files = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        d = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": [i % 10 for i in range(20)]}
        files[name] = pickle.dumps(d)
    files["batches.meta"] = pickle.dumps({"label_names": CLASSES})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    md5 = {k: hashlib.md5(v).hexdigest() for k, v in files.items()}
    return buf.getvalue(), md5


@pytest.fixture
def fake_cifar_server(monkeypatch):
    archive, md5 = _tiny_cifar_archive()
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path != "/cifar-10-python.tar.gz":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(archive)))
            self.end_headers()
            self.wfile.write(archive)

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    monkeypatch.setattr(tvd.CIFAR10, "url", f"{base}/cifar-10-python.tar.gz")
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", hashlib.md5(archive).hexdigest())
    monkeypatch.setattr(
        tvd.CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)]
    )
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(
        tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5["batches.meta"]}
    )
    yield base, hits
    srv.shutdown()


def test_download_only_when_asked(tmp_path, fake_cifar_server):
    base, hits = fake_cifar_server
    with pytest.raises(DataError, match="--download"):
        load_dataset("cifar10", data_root=str(tmp_path))
    assert hits == []  # nothing fetched without --download
    ds = load_dataset("cifar10", data_root=str(tmp_path), download=True)
    assert set(hits) == {"/cifar-10-python.tar.gz"}  # torchvision GETs once to follow redirects
    fetched = len(hits)
    assert ds.x_train.shape == (100, 3, 32, 32) and ds.x_test.shape == (20, 3, 32, 32)
    assert ds.classes == CLASSES
    again = load_dataset("cifar10", data_root=str(tmp_path))  # now local: no second fetch
    assert len(hits) == fetched and (again.x_train == ds.x_train).all()


def test_download_without_network_says_what_to_do(tmp_path, monkeypatch):
    # a port nothing listens on: the same URLError a machine without network gets
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.setattr(tvd.CIFAR10, "url", f"http://127.0.0.1:{port}/cifar-10-python.tar.gz")
    monkeypatch.setattr(tvd.CIFAR10, "mirrors", [], raising=False)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_root=str(tmp_path), download=True)
    assert "could not be downloaded" in str(e.value) and "digits" in str(e.value)
