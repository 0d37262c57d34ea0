"""Tests of the IDX loader on tiny files written here (and the real ones)."""

import gzip
import os
import struct
import zlib

import numpy as np
import pytest

from examples.common import datasets


def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
  head = bytes([0, 0, code, array.ndim]) + struct.pack(
      f">{array.ndim}I", *array.shape)
  return head + array.tobytes()


def _write(path, data: bytes, gz: bool = False) -> str:
  path = str(path) + (".gz" if gz else "")
  with open(path, "wb") as f:
    f.write(gzip.compress(data) if gz else data)
  return path


def _folder(tmp_path, n_images=3, n_labels=3, gz=False):
  rng = np.random.default_rng(0)
  for split, n in (("train", n_images), ("t10k", n_images)):
    images = rng.integers(0, 256, (n, 4, 5), dtype=np.uint8)
    _write(tmp_path / f"{split}-images-idx3-ubyte", _idx_bytes(images), gz)
  for split, n in (("train", n_labels), ("t10k", n_labels)):
    labels = rng.integers(0, 10, (n,), dtype=np.uint8)
    _write(tmp_path / f"{split}-labels-idx1-ubyte", _idx_bytes(labels), gz)
  return str(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip_raw_and_gzip(tmp_path, gz):
  images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  path = _write(tmp_path / "x-idx3-ubyte", _idx_bytes(images), gz)
  np.testing.assert_array_equal(datasets.read_idx(path), images)


def test_big_endian_types_decode(tmp_path):
  values = np.array([[1, -2], [70000, 3]], np.int32)
  path = _write(tmp_path / "i4-idx2", _idx_bytes(values.astype(">i4"),
                                                 code=0x0C))
  out = datasets.read_idx(path)
  np.testing.assert_array_equal(out, values)
  assert out.dtype == np.int32 and out.dtype.isnative


def test_load_split_shapes_and_dtypes(tmp_path):
  d = _folder(tmp_path, gz=True)
  train, test = datasets.load_idx_dataset(d)
  assert train.images.shape == (3, 4, 5) and train.images.dtype == np.uint8
  assert test.labels.shape == (3,) and test.labels.dtype == np.int32


def test_missing_file_names_it(tmp_path):
  d = _folder(tmp_path)
  os.remove(os.path.join(d, "t10k-labels-idx1-ubyte"))
  with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
    datasets.load_idx_split(d, "test")
  with pytest.raises(FileNotFoundError, match="nope"):
    datasets.read_idx(str(tmp_path / "nope"))


def test_wrong_magic_names_file(tmp_path):
  path = _write(tmp_path / "bad", bytes([1, 0, 8, 1, 0, 0, 0, 1, 5]))
  with pytest.raises(ValueError, match="bad: bad IDX magic number 01000801"):
    datasets.read_idx(path)
  path = _write(tmp_path / "badtype", bytes([0, 0, 7, 1, 0, 0, 0, 1, 5]))
  with pytest.raises(ValueError, match="badtype: bad IDX magic"):
    datasets.read_idx(path)


def test_truncated_and_corrupt_files(tmp_path):
  full = _idx_bytes(np.zeros((2, 3, 3), np.uint8))
  path = _write(tmp_path / "short", full[:-1])
  with pytest.raises(ValueError, match="short: header says shape"):
    datasets.read_idx(path)
  path = _write(tmp_path / "tiny", b"\x00\x00")
  with pytest.raises(ValueError, match="tiny: too short"):
    datasets.read_idx(path)
  path = _write(tmp_path / "hdr", bytes([0, 0, 8, 3, 0, 0]))
  with pytest.raises(ValueError, match="hdr: truncated IDX header"):
    datasets.read_idx(path)
  path = _write(tmp_path / "broken.gz", gzip.compress(full)[:-8])
  with pytest.raises(ValueError, match="broken.gz"):
    datasets.read_idx(path)


def test_mismatched_counts_name_both_files(tmp_path):
  d = _folder(tmp_path, n_images=3, n_labels=2)
  with pytest.raises(ValueError, match="3 images.*2 labels"):
    datasets.load_idx_split(d, "train")


def test_images_must_be_3d_uint8(tmp_path):
  d = _folder(tmp_path)
  _write(tmp_path / "train-images-idx3-ubyte",
         _idx_bytes(np.zeros((3, 4), np.uint8)))
  with pytest.raises(ValueError, match="train-images-idx3-ubyte: expected 3-D"):
    datasets.load_idx_split(d, "train")


def test_unknown_split_lists_valid(tmp_path):
  with pytest.raises(ValueError, match="'train', 'test'"):
    datasets.load_idx_split(str(tmp_path), "val")


def test_normalize():
  x = datasets.normalize(np.array([[0, 255], [255, 0]], np.uint8))
  np.testing.assert_allclose([x.mean(), x.std()], [0.0, 1.0], atol=1e-6)
  with pytest.raises(ValueError, match="std"):
    datasets.normalize(np.zeros((2, 2), np.uint8))


@pytest.mark.skipif(
    not os.path.isdir(datasets.FASHION_MNIST_DIR),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist():
  train, test = datasets.load_idx_dataset()
  assert train.images.shape == (60000, 28, 28)
  assert test.images.shape == (10000, 28, 28)
  assert sorted(np.unique(train.labels).tolist()) == list(range(10))
  assert np.bincount(test.labels).tolist() == [1000] * 10


def test_corrupt_gzip_body_names_the_file(tmp_path):
  # A flipped byte in the deflate stream raises zlib.error, which used to
  # escape bare, with no file name.
  images = np.random.default_rng(0).integers(0, 256, (20, 8, 8), np.uint8)
  body = bytearray(gzip.compress(_idx_bytes(images)))
  hits = 0
  for i in range(10, len(body) - 8):
    bad = body.copy()
    bad[i] ^= 0xFF
    try:
      gzip.decompress(bytes(bad))
    except zlib.error:
      path = _write(tmp_path / f"bad{i}-idx3-ubyte", bytes(bad))
      with pytest.raises(ValueError, match=f"cannot read IDX file {path}"):
        datasets.read_idx(path)
      hits += 1
    except (OSError, EOFError):
      pass
  assert hits > 0
