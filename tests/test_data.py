"""Tests for minigrad.data: IDX files, MNIST-5k, preprocessing, download."""

import contextlib
import gzip
import hashlib
import http.server
import os
import pickle
import socket
import struct
import threading
import types

import numpy as np
import pytest

from minigrad.data import (
    MNIST_MEAN,
    MNIST_STD,
    DataError,
    Dataset,
    download_mnist,
    load_mnist,
    load_mnist5k,
    preprocess,
    read_idx_images,
    read_idx_labels,
    resize_bilinear_aa,
    write_idx,
)
from minigrad.data import idx
from minigrad.data.mnist import MNIST5K_IMAGES, MNIST5K_LABELS
from minigrad.data.resize import bilinear_aa_weights

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_MNIST = os.path.join(REPO_ROOT, "..", "shared", "data", "mnist")

# SHA-256 of the shipped files, as written by scripts/make_embedded_mnist.py.
MNIST5K_SHA256 = {
    MNIST5K_IMAGES: "66f9ac540966baaec46dc847ef780170f83ff188761931c0115f3f60497c4797",
    MNIST5K_LABELS: "0bd1c3ebe2126da16fe15ba87422f75d0a4b37066970e0e29aa16577a2857965",
}


def idx_bytes(magic, dims, payload):
    return struct.pack(f">I{len(dims)}I", magic, *dims) + payload


def save(folder, name, data):
    path = os.path.join(str(folder), name)
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def random_digits(count, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    return images, rng.integers(0, 10, size=count, dtype=np.uint8)


def assert_one_line_naming(error, name):
    message = str(error.value)
    assert name in message, message
    assert "\n" not in message, message


# --- IDX format -------------------------------------------------------------

@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_idx_images_round_trip(tmp_path, name):
    images, _ = random_digits(5)
    path = str(tmp_path / name)
    write_idx(path, images)
    back = read_idx_images(path)
    assert back.dtype == np.uint8 and back.shape == (5, 28, 28)
    np.testing.assert_array_equal(back, images)
    back[0, 0, 0] ^= 1  # callers get a writable array of their own


@pytest.mark.parametrize("name", ["labels-idx1-ubyte", "labels-idx1-ubyte.gz"])
def test_idx_labels_round_trip(tmp_path, name):
    _, labels = random_digits(7)
    path = str(tmp_path / name)
    write_idx(path, labels)
    np.testing.assert_array_equal(read_idx_labels(path), labels)


def test_idx_plain_file_layout(tmp_path):
    path = str(tmp_path / "labels")
    write_idx(path, np.array([3, 1, 4], dtype=np.uint8))
    with open(path, "rb") as f:
        assert f.read() == b"\x00\x00\x08\x01\x00\x00\x00\x03\x03\x01\x04"


def test_idx_gzip_output_is_reproducible_and_leaves_no_temp_files(tmp_path):
    images, _ = random_digits(3)
    first, second = tmp_path / "a" / "x.gz", tmp_path / "b" / "x.gz"
    for path in (first, second):
        path.parent.mkdir()
        write_idx(str(path), images)
    assert first.read_bytes() == second.read_bytes()
    assert os.listdir(str(first.parent)) == ["x.gz"]


@pytest.mark.parametrize("array, problem", [
    (np.zeros((2, 28, 28), dtype=np.float32), "expected a uint8 array, got float32"),
    (np.uint8(3), "expected 1 to 255 dimensions, got 0"),
])
def test_write_idx_rejects_bad_arrays(tmp_path, array, problem):
    with pytest.raises(ValueError, match=problem):
        write_idx(str(tmp_path / "x"), array)
    assert os.listdir(str(tmp_path)) == []


PIXELS = bytes(range(256)) * 3 + bytes(16)  # 784 bytes: one 28x28 image

CORRUPT_FILES = [
    # (file name, content, reader, expected problem in the message)
    ("t10k-images-idx3-ubyte.gz", idx_bytes(0x801, [1], b"\x00"), read_idx_images,
     "expected magic 2051 (0x803), got 2049 (0x801)"),
    ("t10k-labels-idx1-ubyte", idx_bytes(0x803, [1, 28, 28], PIXELS), read_idx_labels,
     "expected magic 2049 (0x801), got 2051 (0x803)"),
    ("images-2d", idx_bytes(0x802, [28, 28], PIXELS), read_idx_images,
     "expected magic 2051 (0x803), got 2050 (0x802)"),
    ("images-float", idx_bytes(0xD03, [1, 14, 14], PIXELS), read_idx_images,
     "expected magic 2051 (0x803), got 3331 (0xd03)"),
    ("images-empty", b"", read_idx_images, "expected a 16-byte header, got 0 bytes"),
    ("images-short-header.gz", b"\x00\x00\x08\x03\x00\x00\x00\x01\x00\x00", read_idx_images,
     "expected a 16-byte header, got 10 bytes"),
    ("images-truncated.gz", idx_bytes(0x803, [2, 28, 28], PIXELS), read_idx_images,
     "truncated: expected 1568 data bytes for 2x28x28, got 784"),
    ("labels-truncated", idx_bytes(0x801, [10], bytes(9)), read_idx_labels,
     "truncated: expected 10 data bytes for 10, got 9"),
    ("labels-trailing", idx_bytes(0x801, [2], bytes(3)), read_idx_labels,
     "trailing data: expected 2 data bytes for 2, got 3"),
]


@pytest.mark.parametrize("name, content, reader, problem", CORRUPT_FILES)
def test_corrupt_idx_raises_data_error(tmp_path, name, content, reader, problem):
    path = save(tmp_path, name, content)
    with pytest.raises(DataError) as error:
        reader(path)
    assert_one_line_naming(error, name)
    assert problem in str(error.value)


@pytest.mark.parametrize("content", [
    b"this is not gzip data",
    gzip.compress(idx_bytes(0x801, [100], bytes(100)), mtime=0)[:30],  # cut mid-stream
], ids=["not gzip", "cut mid-stream"])
def test_corrupt_gzip_raises_data_error(tmp_path, content):
    path = str(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(DataError, match="corrupt gzip data") as error:
        read_idx_labels(path)
    assert_one_line_naming(error, "t10k-labels-idx1-ubyte.gz")


def test_missing_idx_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="file not found") as error:
        read_idx_images(str(tmp_path / "nothing-here.gz"))
    assert_one_line_naming(error, "nothing-here.gz")


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


# --- load_mnist on a folder of IDX files ------------------------------------

def write_split(folder, prefix, images, labels, suffix=".gz"):
    write_idx(os.path.join(str(folder), f"{prefix}-images-idx3-ubyte{suffix}"), images)
    write_idx(os.path.join(str(folder), f"{prefix}-labels-idx1-ubyte{suffix}"), labels)


@pytest.mark.parametrize("split, prefix", [("test", "t10k"), ("train", "train")])
@pytest.mark.parametrize("suffix", [".gz", ""])
def test_load_mnist_reads_gzipped_or_plain_files(tmp_path, split, prefix, suffix):
    images, labels = random_digits(6)
    write_split(tmp_path, prefix, images, labels, suffix)
    raw = load_mnist(str(tmp_path), split, preprocess=False)
    assert raw.name == f"mnist-{split}" and len(raw) == 6
    np.testing.assert_array_equal(raw.images, images)
    assert raw.labels.dtype == np.int64
    np.testing.assert_array_equal(raw.labels, labels)
    ready = load_mnist(str(tmp_path), split)
    assert ready.images.dtype == np.float64 and ready.images.shape == (6, 1, 15, 15)
    np.testing.assert_allclose(ready.images, preprocess(images), rtol=0, atol=1e-12)


def test_load_mnist_reports_every_path_looked_for(tmp_path):
    images, labels = random_digits(2)
    write_idx(str(tmp_path / "t10k-images-idx3-ubyte"), images)
    with pytest.raises(DataError, match="file not found") as error:
        load_mnist(str(tmp_path), "test")
    for name in ("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte"):
        assert_one_line_naming(error, os.path.join(str(tmp_path), name))


@pytest.mark.parametrize("images, labels, bad_file, problem", [
    (np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8), "t10k-labels-idx1-ubyte.gz",
     "expected 3 labels to match t10k-images-idx3-ubyte.gz, got 2"),
    (np.zeros((3, 28, 28), np.uint8), np.array([0, 12, 3], np.uint8), "t10k-labels-idx1-ubyte.gz",
     "expected labels in 0..9, got 12 at index 1"),
    (np.zeros((3, 20, 20), np.uint8), np.zeros(3, np.uint8), "t10k-images-idx3-ubyte.gz",
     "expected 28x28 images, got 20x20"),
])
def test_load_mnist_rejects_inconsistent_files(tmp_path, images, labels, bad_file, problem):
    write_split(tmp_path, "t10k", images, labels)
    with pytest.raises(DataError) as error:
        load_mnist(str(tmp_path), "test")
    assert_one_line_naming(error, bad_file)
    assert problem in str(error.value)


@pytest.mark.parametrize("loader", [lambda split: load_mnist(".", split), load_mnist5k])
def test_loaders_reject_unknown_split(loader):
    with pytest.raises(ValueError, match="expected split 'train' or 'test', got 'val'"):
        loader("val")


# --- the shipped MNIST-5k ---------------------------------------------------

@pytest.mark.parametrize("path", sorted(MNIST5K_SHA256))
def test_shipped_files_have_expected_sha256(path):
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == MNIST5K_SHA256[path]


def expected_split_indices(labels):
    """Indices of the first 400 of each class (train) and the rest (test), in file order."""
    seen = [0] * 10
    train, test = [], []
    for i, label in enumerate(labels):
        (train if seen[label] < 400 else test).append(i)
        seen[label] += 1
    return train, test


def test_mnist5k_splits_400_and_100_per_class_in_file_order():
    all_images, all_labels = read_idx_images(MNIST5K_IMAGES), read_idx_labels(MNIST5K_LABELS)
    assert all_images.shape == (5000, 28, 28)
    train_idx, test_idx = expected_split_indices(all_labels)
    for split, indices, per_class in (("train", train_idx, 400), ("test", test_idx, 100)):
        raw = load_mnist5k(split, preprocess=False)
        assert raw.name == f"mnist5k-{split}" and len(raw) == 10 * per_class
        assert raw.images.dtype == np.uint8 and raw.images.shape == (10 * per_class, 28, 28)
        assert raw.labels.dtype == np.int64
        assert np.bincount(raw.labels, minlength=10).tolist() == [per_class] * 10
        np.testing.assert_array_equal(raw.images, all_images[indices])
        np.testing.assert_array_equal(raw.labels, all_labels[indices])


def test_mnist5k_preprocessed_is_preprocess_of_raw():
    raw, ready = load_mnist5k("test", preprocess=False), load_mnist5k("test")
    assert ready.images.dtype == np.float64 and ready.images.shape == (1000, 1, 15, 15)
    np.testing.assert_array_equal(ready.images, preprocess(raw.images))
    np.testing.assert_array_equal(ready.labels, raw.labels)


# --- preprocessing ----------------------------------------------------------

@pytest.mark.parametrize("value", [0, 1, 128, 255])
def test_preprocess_normalises_each_pixel_with_mnist_mean_and_std(value):
    images = np.full((2, 28, 28), value, dtype=np.uint8)
    expected = (value / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(preprocess(images), np.full((2, 1, 15, 15), expected), rtol=0, atol=1e-12)


def test_preprocess_at_full_size_is_the_pixel_formula():
    images, _ = random_digits(3)
    out = preprocess(images, size=28)
    np.testing.assert_allclose(out[:, 0], (images / 255.0 - MNIST_MEAN) / MNIST_STD, rtol=0, atol=1e-12)


@pytest.mark.parametrize("images, problem", [
    (np.zeros((2, 28, 28), np.float64), "expected uint8 images, got float64"),
    (np.zeros((28, 28), np.uint8), r"expected images shaped \(N, rows, columns\), got shape \(28, 28\)"),
])
def test_preprocess_rejects_bad_input(images, problem):
    with pytest.raises(ValueError, match=problem):
        preprocess(images)


RESIZES = [
    # (input shape, output size)
    ((3, 1, 28, 28), 15),
    ((3, 1, 28, 28), 14),
    ((3, 1, 28, 28), 7),
    ((2, 2, 20, 20), 13),
    ((3, 1, 28, 20), (15, 9)),
    ((3, 1, 15, 15), 28),
    ((1, 1, 5, 7), (33, 2)),
    ((2, 1, 28, 28), 28),
]


def torch_resize(torch, array, size):
    size = (size, size) if isinstance(size, int) else size
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    return torch.nn.functional.interpolate(
        x, size=size, mode="bilinear", antialias=True, align_corners=False
    ).numpy()


@pytest.mark.parametrize("shape, size", RESIZES)
def test_resize_matches_torch_on_random_images(shape, size):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for resizing")
    x = np.random.default_rng(1).normal(size=shape)
    np.testing.assert_allclose(resize_bilinear_aa(x, size), torch_resize(torch, x, size), rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [15, 14, 7, (15, 9), 40])
def test_resize_matches_torch_on_real_digits(size):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for resizing")
    digits = load_mnist5k("test", preprocess=False).images[::50]
    x = ((digits / 255.0 - MNIST_MEAN) / MNIST_STD)[:, None]
    np.testing.assert_allclose(resize_bilinear_aa(x, size), torch_resize(torch, x, size), rtol=0, atol=1e-6)


def test_resize_weights_are_cached_read_only_and_sum_to_one():
    weights = bilinear_aa_weights(28, 15)
    assert weights.shape == (15, 28) and bilinear_aa_weights(28, 15) is weights
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    with pytest.raises(ValueError):
        weights[0, 0] = 1.0


@pytest.mark.parametrize("size", [0, -3, (15,), (15, 0), "15", 1.5, True, None])
def test_resize_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match="expected a positive int or a"):
        resize_bilinear_aa(np.zeros((28, 28)), size)


def test_resize_rejects_arrays_without_two_axes():
    with pytest.raises(ValueError, match=r"got shape \(28,\)"):
        resize_bilinear_aa(np.zeros(28), 15)


# --- Dataset ----------------------------------------------------------------

def test_dataset_subset_len_and_cheap_pickle():
    data = load_mnist5k("test")
    part = data.subset([5, 0, 999])
    assert len(part) == 3 and part.name == "mnist5k-test"
    np.testing.assert_array_equal(part.images[1], data.images[0])
    np.testing.assert_array_equal(part.labels, data.labels[[5, 0, 999]])
    blob = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(blob) < data.images.nbytes + data.labels.nbytes + 1000
    back = pickle.loads(blob)
    assert back.name == data.name
    np.testing.assert_array_equal(back.images, data.images)
    np.testing.assert_array_equal(back.labels, data.labels)


@pytest.mark.parametrize("images, labels, name, problem", [
    (np.zeros((3, 4)), np.zeros(2, np.int64), "x", r"expected as many labels as images \(3\), got 2"),
    (np.zeros((3, 4)), np.zeros(3), "x", "expected 1-D integer labels, got float64"),
    (np.zeros((3, 4)), np.zeros(3, np.int64), None, "expected a str name, got NoneType"),
])
def test_dataset_rejects_inconsistent_arrays(images, labels, name, problem):
    with pytest.raises(ValueError, match=problem):
        Dataset(images, labels, name)


def test_dataset_subset_rejects_non_integer_indices():
    with pytest.raises(ValueError, match="expected 1-D integer indices, got float64"):
        Dataset(np.zeros((3, 4)), np.zeros(3, np.int64), "x").subset([0.5])


# --- the official MNIST test set, when present ------------------------------

@pytest.mark.skipif(not os.path.isdir(OFFICIAL_MNIST), reason=f"no MNIST files at {OFFICIAL_MNIST}")
def test_official_test_set_loads_with_known_checksums(tmp_path):
    raw = load_mnist(OFFICIAL_MNIST, "test", preprocess=False)
    assert len(raw) == 10000 and raw.images.shape == (10000, 28, 28)
    # Writing the loaded arrays back must give the published uncompressed files.
    published = (("images", raw.images, "0fa7898d"), ("labels", raw.labels.astype(np.uint8), "ff7bcfd4"))
    for name, array, prefix in published:
        write_idx(str(tmp_path / name), array)
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest().startswith(prefix)
    ready = load_mnist(OFFICIAL_MNIST, "test")
    assert ready.images.shape == (10000, 1, 15, 15)


# --- download, against a local HTTP server ----------------------------------

@pytest.fixture
def target(tmp_path):
    """The folder downloads go to; download_mnist creates it."""
    return str(tmp_path / "mnist")


@pytest.fixture
def mirrors(tmp_path, monkeypatch):
    """Two mirrors on 127.0.0.1: /empty/ answers 404, /full/ serves small MNIST-like files."""
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    root = tmp_path / "www"
    (root / "empty").mkdir(parents=True)
    (root / "full").mkdir()
    images, labels = random_digits(4, seed=2)
    for prefix in ("train", "t10k"):
        write_split(root / "full", prefix, images, labels)
    checksums = {}
    for name in os.listdir(str(root / "full")):
        checksums[name] = "sha256:" + hashlib.sha256((root / "full" / name).read_bytes()).hexdigest()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    yield types.SimpleNamespace(
        empty=url + "/empty/", full=url + "/full/", root=root, checksums=checksums,
        requests=requests, images=images, labels=labels,
    )
    server.shutdown()
    server.server_close()
    thread.join()


def test_download_fetches_verified_files_that_load(target, mirrors):
    paths = download_mnist(target, base_urls=[mirrors.full], checksums=mirrors.checksums)
    assert [os.path.basename(p) for p in paths] == [
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
    ]
    assert sorted(os.listdir(target)) == sorted(os.path.basename(p) for p in paths)
    test = load_mnist(target, "test", preprocess=False)
    np.testing.assert_array_equal(test.images, mirrors.images)


def test_download_falls_back_to_the_next_mirror(target, mirrors):
    download_mnist(target, "test", base_urls=[mirrors.empty, mirrors.full], checksums=mirrors.checksums)
    assert mirrors.requests == [
        "/empty/t10k-images-idx3-ubyte.gz", "/full/t10k-images-idx3-ubyte.gz",
        "/empty/t10k-labels-idx1-ubyte.gz", "/full/t10k-labels-idx1-ubyte.gz",
    ]
    assert sorted(os.listdir(target)) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_download_falls_back_past_an_unreachable_mirror(target, mirrors):
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    download_mnist(target, "test", base_urls=[dead, mirrors.full], checksums=mirrors.checksums, timeout=5)
    assert len(os.listdir(target)) == 2


def test_download_checksum_mismatch_removes_the_partial_file(target, mirrors):
    name = "t10k-labels-idx1-ubyte.gz"
    wrong, got = "0" * 64, mirrors.checksums[name].split(":")[1]
    checksums = dict(mirrors.checksums, **{name: "sha256:" + wrong})
    with pytest.raises(DataError) as error:
        download_mnist(target, "test", base_urls=[mirrors.full], checksums=checksums)
    assert_one_line_naming(error, name)
    assert f"expected sha256 {wrong}, got {got}" in str(error.value)
    assert os.listdir(target) == ["t10k-images-idx3-ubyte.gz"]


def test_download_stops_at_the_size_limit_and_keeps_nothing(target, mirrors, monkeypatch):
    name = "t10k-images-idx3-ubyte.gz"
    size = os.path.getsize(mirrors.root / "full" / name)
    monkeypatch.setattr(idx, "MAX_BYTES", size - 1)
    with pytest.raises(DataError) as error:
        download_mnist(target, "test", base_urls=[mirrors.full], checksums=mirrors.checksums)
    assert_one_line_naming(error, name)
    assert f"expected at most {size - 1} bytes, got more" in str(error.value)
    assert os.listdir(target) == []


def test_download_fails_when_no_mirror_has_the_file(target, mirrors):
    with pytest.raises(DataError, match="download failed from every mirror") as error:
        download_mnist(target, "test", base_urls=[mirrors.empty], checksums=mirrors.checksums)
    assert_one_line_naming(error, "t10k-images-idx3-ubyte.gz")
    assert "HTTP 404" in str(error.value)
    assert os.listdir(target) == []


def test_download_keeps_valid_files_and_replaces_corrupt_ones(target, mirrors):
    def fetch():
        download_mnist(target, "test", base_urls=[mirrors.full], checksums=mirrors.checksums)

    fetch()
    del mirrors.requests[:]
    fetch()
    assert mirrors.requests == []
    with open(os.path.join(target, "t10k-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(b"damaged")
    fetch()
    assert mirrors.requests == ["/full/t10k-labels-idx1-ubyte.gz"]
    np.testing.assert_array_equal(load_mnist(target, "test", preprocess=False).labels, mirrors.labels)


@pytest.mark.parametrize("kwargs, problem", [
    ({"base_urls": "http://127.0.0.1/"}, "expected a non-empty sequence of base URLs"),
    ({"base_urls": []}, "expected a non-empty sequence of base URLs"),
    ({"checksums": {}},
     "expected a checksum like 'sha256:<64 hex digits>' for train-images-idx3-ubyte.gz, got None"),
    ({"checksums": {"t10k-images-idx3-ubyte.gz": "md5:123"}, "splits": "test"}, "got 'md5:123'"),
    ({"splits": ("valid",)}, "expected split 'train' or 'test', got 'valid'"),
    ({"timeout": 0}, "expected a positive timeout in seconds, got 0"),
])
def test_download_rejects_bad_arguments_before_any_request(target, kwargs, problem):
    # A refused local port stands in for the default mirrors, so a missed check cannot reach the internet.
    kwargs = dict({"base_urls": ["http://127.0.0.1:9/"]}, **kwargs)
    with pytest.raises(ValueError, match=problem):
        download_mnist(target, **kwargs)
    assert not os.path.exists(target)
