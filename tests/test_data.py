"""Tests of bioplaus.data: IDX files, folder lookup, loaders, checked downloads and toy data."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import pickle
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bioplaus.data import (
    FASHION_MNIST_URL,
    Dataset,
    data_home,
    download_fashion_mnist,
    download_file,
    find_dataset_folder,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    make_synthetic,
    read_idx,
    resolve_file,
    write_idx,
)
from bioplaus.errors import ConfigError, DataError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_debian_fashion = pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir() and not os.environ.get("CI"),
    reason=f"{DEBIAN_FASHION} is absent: install Debian's dataset-fashion-mnist "
    "(apt-get install dataset-fashion-mnist); this test never skips when CI is set",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the user's BIOPLAUS_DATA and ~/.cache/bioplaus out of every test."""
    monkeypatch.delenv("BIOPLAUS_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 5), (2, 1, 3, 2), (0, 4)])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, dtype: type, shape: tuple[int, ...], suffix: str) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path / f"array.idx{suffix}"
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable


def test_idx_layout_is_big_endian(tmp_path: Path) -> None:
    path = tmp_path / "ints.idx"
    write_idx(path, np.array([[1, 2, 3]], dtype=np.int32))
    assert path.read_bytes() == bytes.fromhex("00000c020000000100000003000000010000000200000003")


def test_idx_compression_is_detected_by_content(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "a.gz", array)
    (tmp_path / "gzipped-without-suffix").write_bytes((tmp_path / "a.gz").read_bytes())
    write_idx(tmp_path / "plain", array)
    (tmp_path / "plain-named.gz").write_bytes((tmp_path / "plain").read_bytes())
    for name in ("gzipped-without-suffix", "plain-named.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), array)


def test_write_idx_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="uint16"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=np.uint16))


def _valid_idx(tmp_path: Path) -> bytes:
    """The bytes of a uint8 IDX file of shape (10, 4): a 12-byte header and 40 data bytes."""
    write_idx(tmp_path / "valid.idx", np.arange(40, dtype=np.uint8).reshape(10, 4))
    return (tmp_path / "valid.idx").read_bytes()


@pytest.mark.parametrize(
    ("name", "make", "fragments"),
    [
        ("short-payload.idx", lambda ok: ok[:32], ["truncated IDX payload", "needs 40 bytes", "found 20"]),
        ("long-payload.idx", lambda ok: ok + b"xyz", ["longer than its dimensions", "40 bytes", "found 43"]),
        ("tiny.idx", lambda ok: ok[:3], ["truncated IDX header"]),
        ("short-header.idx", lambda ok: ok[:8], ["truncated IDX header", "need 12 bytes"]),
        ("bad-magic.idx", lambda ok: b"\x50\x4b" + ok[2:], ["not an IDX file"]),
        ("bad-code.idx", lambda ok: ok[:2] + b"\x0a" + ok[3:], ["unknown IDX dtype code 0x0A"]),
        ("cut.gz", lambda ok: gzip.compress(ok)[:-12], ["corrupt or truncated gzip"]),
        ("garbled.gz", lambda ok: gzip.compress(ok)[:10] + b"\xff" * 30 + gzip.compress(ok)[40:], ["gzip"]),
    ],
)
def test_malformed_idx_names_the_file(
    tmp_path: Path, name: str, make: Callable[[bytes], bytes], fragments: list[str]
) -> None:
    path = tmp_path / name
    path.write_bytes(make(_valid_idx(tmp_path)))
    with pytest.raises(DataError) as info:
        read_idx(path, hint="fetch a fresh copy")
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    assert message.endswith("fetch a fresh copy.")


def test_idx_default_hint_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read the file.*replace the file with a good copy") as info:
        read_idx(tmp_path / "absent.idx")
    assert "absent.idx" in str(info.value)


# --------------------------------------------------------------------------- Dataset


def test_dataset_properties_and_validation() -> None:
    x, y = np.zeros((5, 1, 2, 2), np.uint8), np.zeros(5, np.int64)
    data = Dataset("tiny", x, y, x[:2], y[:2], ("a", "b", "c"), (0.0, 255.0))
    assert data.n_classes == 3 and data.input_shape == (1, 2, 2)
    assert repr(data) == "Dataset('tiny', train=5, test=2, input_shape=(1, 2, 2), dtype=uint8, n_classes=3)"
    with pytest.raises(DataError, match="'tiny'.*x_test has 2 examples, y_test has 3"):
        Dataset("tiny", x, y, x[:2], y[:3], ("a",), None)
    with pytest.raises(DataError, match="'odd'.*shape"):
        Dataset("odd", x, y, x[:2, :, :1], y[:2], ("a",), None)


# --------------------------------------------------------------------------- locating folders


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data_home() == tmp_path / "home" / ".cache" / "bioplaus"
    monkeypatch.setenv("BIOPLAUS_DATA", str(tmp_path / "store"))
    assert data_home() == tmp_path / "store"


def test_find_uses_bioplaus_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    monkeypatch.setenv("BIOPLAUS_DATA", str(store))
    _touch(store, "a", "b.gz")
    assert find_dataset_folder("toy", ["a.gz", "b"]) == store
    _touch(store / "toy", "a.gz", "b")
    assert find_dataset_folder("toy", ["a", "b"]) == store / "toy"


def test_find_order_system_then_cache(tmp_path: Path) -> None:
    system = tmp_path / "system"
    cache = tmp_path / "home" / ".cache" / "bioplaus" / "toy"
    _touch(cache, "a")
    assert find_dataset_folder("toy", ["a"], system_dirs=[system]) == cache
    _touch(system, "a.gz")
    assert find_dataset_folder("toy", ["a"], system_dirs=[system]) == system


def test_find_missing_root_names_the_path(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        find_dataset_folder("toy", ["a"], root, instructions="Ask the librarian.")
    message = str(info.value)
    assert f"{root} (does not exist)" in message
    assert f"{root / 'toy'} (does not exist)" in message
    assert message.endswith("Ask the librarian.")


def test_find_incomplete_folder_lists_missing_files(tmp_path: Path) -> None:
    root = _touch(tmp_path / "partial", "a")
    with pytest.raises(DataError, match=r"partial \(missing: b, c\.gz\)"):
        find_dataset_folder("toy", ["a", "b", "c.gz"], root)


def test_named_root_is_never_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    complete = _touch(tmp_path / "store" / "toy", "a")
    monkeypatch.setenv("BIOPLAUS_DATA", str(complete.parent))
    root = _touch(tmp_path / "mine")
    with pytest.raises(DataError, match="mine") as info:
        find_dataset_folder("toy", ["a"], root, system_dirs=[complete])
    assert str(complete) not in str(info.value)
    _touch(root / "toy", "a")
    assert find_dataset_folder("toy", ["a"], root, system_dirs=[complete]) == root / "toy"


def test_resolve_file(tmp_path: Path) -> None:
    _touch(tmp_path, "x.gz", "y", "y.gz")
    assert resolve_file(tmp_path, "x") == tmp_path / "x.gz"
    assert resolve_file(tmp_path, "y") == tmp_path / "y"
    assert resolve_file(tmp_path, "y.gz") == tmp_path / "y.gz"
    with pytest.raises(DataError, match="z or z.gz"):
        resolve_file(tmp_path, "z")


# --------------------------------------------------------------------------- MNIST and Fashion-MNIST


@needs_debian_fashion
def test_fashion_mnist_from_debian() -> None:
    data = load_fashion_mnist()
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    assert data.value_range == (0.0, 255.0) and data.classes[0] == "T-shirt/top" and data.n_classes == 10
    assert np.bincount(data.y_train).tolist() == [6000] * 10
    assert np.bincount(data.y_test).tolist() == [1000] * 10


def _write_mnist_files(folder: Path, n_train: int = 6, n_test: int = 4, suffix: str = ".gz") -> None:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n, np.uint8))


def test_mnist_from_bioplaus_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_mnist_files(tmp_path / "mnist", suffix="")
    monkeypatch.setenv("BIOPLAUS_DATA", str(tmp_path))
    data = load_mnist()
    assert data.name == "mnist" and data.x_train.shape == (6, 1, 28, 28) and data.x_test.shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(data.x_test[:, 0], read_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte"))


def test_mnist_inconsistent_files(tmp_path: Path) -> None:
    _write_mnist_files(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="3 labels for 4 images"):
        load_mnist(root=tmp_path)
    write_idx(labels, np.array([0, 1, 2, 10], np.uint8))
    with pytest.raises(DataError, match=r"labels must lie in 0\.\.9, found 10"):
        load_mnist(root=tmp_path)


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path: Path) -> None:
    root = tmp_path / "nope"
    with pytest.raises(DataError) as info:
        load_fashion_mnist(root=root)
    message = str(info.value)
    for fragment in (
        str(root),
        "apt-get install dataset-fashion-mnist",
        "BIOPLAUS_DATA",
        "root=",
        "bioplaus.data.download_fashion_mnist()",
    ):
        assert fragment in message


def test_missing_mnist_says_where_to_put_it(tmp_path: Path) -> None:
    root = tmp_path / "nope"
    with pytest.raises(DataError) as info:
        load_mnist(root=root)
    message = str(info.value)
    for fragment in (str(root), "train-images-idx3-ubyte", "$BIOPLAUS_DATA/mnist", "root=", "download_file"):
        assert fragment in message


# --------------------------------------------------------------------------- CIFAR-10

_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _cifar_batches(n: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(2)
    return {b: (rng.integers(0, 256, (n, 3072), np.uint8), rng.integers(0, 10, n)) for b in _BATCHES}


def _check_cifar(data: Dataset, batches: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    train = [batches[b] for b in _BATCHES[:-1]]
    assert data.x_train.shape == (15, 3, 32, 32) and data.x_train.dtype == np.uint8
    np.testing.assert_array_equal(data.x_train.reshape(15, -1), np.concatenate([x for x, _ in train]))
    np.testing.assert_array_equal(data.y_train, np.concatenate([y for _, y in train]))
    np.testing.assert_array_equal(data.x_test.reshape(3, -1), batches["test_batch"][0])
    np.testing.assert_array_equal(data.y_test, batches["test_batch"][1])
    assert data.y_train.dtype == np.int64 and data.classes[0] == "airplane" and data.n_classes == 10


def test_cifar10_binary_layout(tmp_path: Path) -> None:
    batches = _cifar_batches()
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name, (x, y) in batches.items():
        records = np.concatenate([y.astype(np.uint8)[:, None], x], axis=1)
        (folder / f"{name}.bin").write_bytes(records.tobytes())
    _check_cifar(load_cifar10(root=tmp_path), batches)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_python_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: int) -> None:
    """Python batches load whichever protocol pickled them (the originals are protocol 2, from Python 2)."""
    batches = _cifar_batches()
    folder = tmp_path / "cifar10"
    folder.mkdir()
    for name, (x, y) in batches.items():
        batch = {b"data": x, b"labels": y.tolist(), b"batch_label": b"x", b"filenames": [b"a.png"] * len(y)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    monkeypatch.setenv("BIOPLAUS_DATA", str(tmp_path))
    _check_cifar(load_cifar10(), batches)


def test_cifar10_bad_files(tmp_path: Path) -> None:
    _touch(tmp_path, *(f"{b}.bin" for b in _BATCHES))
    bad = tmp_path / "data_batch_1.bin"
    bad.write_bytes(bytes(2 * 3073 + 5))
    with pytest.raises(DataError, match="3073") as info:
        load_cifar10(root=tmp_path)
    assert str(bad) in str(info.value)
    _touch(tmp_path / "py", *_BATCHES)
    (tmp_path / "py" / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot unpickle") as info:
        load_cifar10(root=tmp_path / "py")
    assert "data_batch_1" in str(info.value)


class _Planted:
    """Pickles as a call of ``os.system``: what a crafted batch could run."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def test_cifar10_crafted_pickle_runs_nothing(tmp_path: Path) -> None:
    """A python batch whose pickle calls os.system fails with a clear error before anything runs."""
    marker = tmp_path / "ran"
    folder = _touch(tmp_path / "py", *_BATCHES)
    for name in _BATCHES:
        crafted = {b"data": _Planted(f"touch {marker}"), b"labels": [0]}
        (folder / name).write_bytes(pickle.dumps(crafted, protocol=2))
    with pytest.raises(DataError, match=r"refusing to load (posix|nt)\.system") as info:
        load_cifar10(root=folder)
    assert "data_batch_1" in str(info.value) and not marker.exists()


def test_missing_cifar10_says_how_to_get_it(tmp_path: Path) -> None:
    root = _touch(tmp_path / "partial", "data_batch_1.bin")
    with pytest.raises(DataError) as info:
        load_cifar10(root=root)
    message = str(info.value)
    for fragment in (
        str(root),
        "missing: data_batch_2.bin",
        "cifar-10-batches-bin",
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        "root=",
    ):
        assert fragment in message


# --------------------------------------------------------------------------- downloads


@dataclass
class Served:
    """A folder served over HTTP on 127.0.0.1 by a background thread."""

    url: str
    server: http.server.ThreadingHTTPServer
    thread: threading.Thread
    requests: list[str] = field(default_factory=list)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def serve() -> Iterator[Callable[[Path], Served]]:
    """Start quiet HTTP servers for folders; shut them all down after the test."""
    started: list[Served] = []

    def start(folder: Path) -> Served:
        requests: list[str] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self) -> None:
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:
                """Keep test output clean."""

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        served = Served(f"http://127.0.0.1:{server.server_address[1]}", server, thread, requests)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


def test_download_file_checks_hash(tmp_path: Path, serve: Callable[[Path], Served]) -> None:
    payload = b"bioplaus " * 1000
    blob = gzip.compress(payload)
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "blob.gz").write_bytes(blob)
    served = serve(tmp_path / "srv")
    url = f"{served.url}/blob.gz"

    dest = tmp_path / "out" / "blob.gz"
    assert download_file(url, dest, hashlib.sha256(blob).hexdigest()) == dest
    assert dest.read_bytes() == blob and len(served.requests) == 1
    download_file(url, dest, hashlib.sha256(blob).hexdigest().upper())
    assert len(served.requests) == 1  # already there with the right hash: not downloaded again

    payload_hash = hashlib.sha256(payload).hexdigest()
    other = tmp_path / "out" / "other.gz"
    other.write_bytes(b"stale")
    download_file(url, other, payload_hash, decompressed=True)
    assert other.read_bytes() == blob and len(served.requests) == 2

    wrong = "0" * 64
    with pytest.raises(DataError) as info:
        download_file(url, tmp_path / "fail" / "blob.gz", wrong)
    message = str(info.value)
    assert url in message and wrong in message and hashlib.sha256(blob).hexdigest() in message
    assert list((tmp_path / "fail").iterdir()) == []


def test_download_file_errors(tmp_path: Path, serve: Callable[[Path], Served]) -> None:
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "plain.txt").write_bytes(b"not gzip")
    served = serve(tmp_path / "srv")
    with pytest.raises(DataError, match="not a valid gzip"):
        download_file(f"{served.url}/plain.txt", tmp_path / "out" / "p", "0" * 64, decompressed=True)
    with pytest.raises(DataError, match="Cannot download .*/missing.gz.*404"):
        download_file(f"{served.url}/missing.gz", tmp_path / "out" / "m", "0" * 64)
    served.stop()
    url = f"{served.url}/plain.txt"
    with pytest.raises(DataError, match="network connection") as info:
        download_file(url, tmp_path / "out" / "p", "0" * 64, timeout=5)
    assert url in str(info.value)
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(ConfigError, match="sha256"):
        download_file(url, tmp_path / "out" / "p", "abc")


@needs_debian_fashion
def test_download_fashion_mnist_from_local_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Callable[[Path], Served]
) -> None:
    assert FASHION_MNIST_URL.startswith("http://fashion-mnist.")
    served = serve(DEBIAN_FASHION)
    monkeypatch.setenv("BIOPLAUS_DATA", str(tmp_path))
    folder = download_fashion_mnist(base_url=served.url)
    assert folder == tmp_path / "fashion-mnist" and len(served.requests) == 4
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in DEBIAN_FASHION.iterdir())
    data = load_fashion_mnist()  # $BIOPLAUS_DATA/fashion-mnist comes before Debian's folder
    assert data.x_train.shape == (60000, 1, 28, 28) and data.y_test.shape == (10000,)
    assert download_fashion_mnist(root=folder, base_url=served.url + "/") == folder
    assert len(served.requests) == 4  # everything was already there and verified


# --------------------------------------------------------------------------- toy data


def test_digits_split() -> None:
    data = load_digits()
    assert data.x_train.shape[1:] == (1, 8, 8) and data.x_train.dtype == np.uint8
    assert len(data.x_train) + len(data.x_test) == 1797 and 355 <= len(data.x_test) <= 365
    assert data.x_train.max() == 16 and data.value_range == (0.0, 16.0)
    assert np.all(np.bincount(data.y_test, minlength=10) >= 35)
    again, other = load_digits(seed=0), load_digits(seed=1)
    np.testing.assert_array_equal(data.x_test, again.x_test)
    assert not np.array_equal(data.y_test, other.y_test) or not np.array_equal(data.x_test, other.x_test)
    with pytest.raises(ConfigError, match="test_fraction"):
        load_digits(test_fraction=1.0)


def test_synthetic_is_deterministic_and_balanced() -> None:
    data = make_synthetic(n_train=800, n_test=400, n_features=10, n_classes=4, seed=3)
    assert data.x_train.shape == (800, 10) and data.x_train.dtype == np.float32 and data.value_range is None
    again = make_synthetic(n_train=800, n_test=400, n_features=10, n_classes=4, seed=3)
    np.testing.assert_array_equal(data.x_test, again.x_test)
    np.testing.assert_array_equal(data.y_train, again.y_train)
    assert not np.array_equal(data.x_train, make_synthetic(n_train=800, n_features=10, seed=4).x_train)
    for seed in range(5):
        for labels in (make_synthetic(seed=seed).y_train, make_synthetic(seed=seed).y_test):
            assert np.bincount(labels, minlength=4).min() >= 0.1 * len(labels)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_classes": 1}, "n_classes"),
        ({"n_train": 0}, "n_train"),
        ({"hidden": 2.5}, "hidden"),
        ({"n_features": True}, "n_features"),
        ({"seed": -1}, "seed"),
    ],
)
def test_synthetic_rejects_bad_arguments(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        make_synthetic(**kwargs)
