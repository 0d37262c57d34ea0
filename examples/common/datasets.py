"""Reading MNIST-style IDX files (Fashion-MNIST, MNIST), raw or gzipped.

Nothing here touches the network: point :func:`load_idx_dataset` at a folder
that already holds the four files, e.g. ``/usr/share/datasets/fashion-mnist``
(Debian's ``dataset-fashion-mnist`` package) or a folder of MNIST files.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import NamedTuple

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# IDX type byte -> numpy dtype (big-endian on disk).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class Split(NamedTuple):
  """Images and labels of one split."""
  images: np.ndarray  # uint8 [n, rows, cols]
  labels: np.ndarray  # int32 [n]


def _read_bytes(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      head = f.read(2)
      f.seek(0)
      if head == b"\x1f\x8b":
        return gzip.decompress(f.read())
      return f.read()
  except FileNotFoundError:
    raise FileNotFoundError(f"IDX file not found: {path}") from None
  except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
    raise ValueError(f"cannot read IDX file {path}: {e}") from e


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file (raw or gzip-compressed) into a numpy array.

  The IDX format is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then
  ``ndim`` big-endian uint32 sizes, then the data in row-major order.

  Args:
    path: the file; gzip compression is detected from its first bytes.

  Returns:
    An array of the stored dtype (native byte order) and shape.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: the file is corrupt, has a bad magic number or a size that
      does not match its header; the message names the file.

  Example:
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> with open(path, "wb") as f:
    ...   _ = f.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> read_idx(path).tolist()
    [7, 2, 1]
  """
  data = _read_bytes(path)
  if len(data) < 4:
    raise ValueError(f"{path}: too short to be an IDX file ({len(data)} bytes).")
  zero0, zero1, code, ndim = data[:4]
  if zero0 != 0 or zero1 != 0 or code not in _IDX_DTYPES or ndim < 1:
    raise ValueError(
        f"{path}: bad IDX magic number {data[:4].hex()}; expected "
        f"00 00 <type in {sorted(_IDX_DTYPES)}> <ndim >= 1>.")
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f"{path}: truncated IDX header.")
  shape = tuple(int(s) for s in np.frombuffer(data, ">u4", ndim, 4))
  dtype = _IDX_DTYPES[code]
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(data) - header != expected:
    raise ValueError(
        f"{path}: header says shape {shape} ({expected} bytes of data) but "
        f"the file holds {len(data) - header} bytes; it is corrupt or "
        "truncated.")
  array = np.frombuffer(data, dtype, offset=header).reshape(shape)
  return array.astype(dtype.newbyteorder("="))


def _find(data_dir: str, stem: str) -> str:
  for name in (stem, stem + ".gz"):
    path = os.path.join(data_dir, name)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(
      f"IDX file not found: {os.path.join(data_dir, stem)}[.gz] (looked for "
      f"{stem} and {stem}.gz in {data_dir!r}).")


def load_idx_split(data_dir: str, split: str = "train") -> Split:
  """Loads the images and labels of one split of an MNIST-style folder.

  Looks for ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (or
  ``t10k-...`` for ``"test"``), each raw or with a ``.gz`` suffix.

  Args:
    data_dir: the folder.
    split: ``"train"`` or ``"test"``.

  Returns:
    A :class:`Split` of ``uint8`` images ``[n, rows, cols]`` and ``int32``
    labels ``[n]``.

  Raises:
    FileNotFoundError: a file is missing (the message names it).
    ValueError: unknown split, a corrupt file, images that are not 3-D uint8,
      labels that are not 1-D, or different image and label counts.

  Example:
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with open(os.path.join(d, "t10k-images-idx3-ubyte"), "wb") as f:
    ...   _ = f.write(bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 9, 4]))
    >>> with open(os.path.join(d, "t10k-labels-idx1-ubyte"), "wb") as f:
    ...   _ = f.write(bytes([0, 0, 8, 1, 0, 0, 0, 2, 5, 3]))
    >>> split = load_idx_split(d, "test")
    >>> split.images.shape, split.labels.tolist()
    ((2, 1, 1), [5, 3])
  """
  if split not in _SPLIT_FILES:
    raise ValueError(f"unknown split {split!r}; expected one of "
                     f"{tuple(_SPLIT_FILES)}.")
  image_path, label_path = (_find(data_dir, stem)
                            for stem in _SPLIT_FILES[split])
  images, labels = read_idx(image_path), read_idx(label_path)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise ValueError(f"{image_path}: expected 3-D uint8 images, got shape "
                     f"{images.shape} and dtype {images.dtype}.")
  if labels.ndim != 1:
    raise ValueError(f"{label_path}: expected 1-D labels, got shape "
                     f"{labels.shape}.")
  if len(images) != len(labels):
    raise ValueError(
        f"{image_path} holds {len(images)} images but {label_path} holds "
        f"{len(labels)} labels.")
  return Split(images, labels.astype(np.int32))


def load_idx_dataset(data_dir: str = FASHION_MNIST_DIR
                     ) -> tuple[Split, Split]:
  """Loads the train and test splits of an MNIST-style folder.

  Args:
    data_dir: a folder with the four IDX files, raw or gzipped; Fashion-MNIST
      from Debian's ``dataset-fashion-mnist`` package by default. MNIST works
      the same way.

  Returns:
    ``(train, test)``, two :class:`Split`.

  Example:
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> for split in ("train", "t10k"):
    ...   with open(os.path.join(d, f"{split}-images-idx3-ubyte"), "wb") as f:
    ...     _ = f.write(bytes([0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 9]))
    ...   with open(os.path.join(d, f"{split}-labels-idx1-ubyte"), "wb") as f:
    ...     _ = f.write(bytes([0, 0, 8, 1, 0, 0, 0, 1, 4]))
    >>> train, test = load_idx_dataset(d)
    >>> train.images.shape, test.labels.tolist()
    ((1, 1, 1), [4])
  """
  return load_idx_split(data_dir, "train"), load_idx_split(data_dir, "test")


def normalize(images: np.ndarray, mean: float | None = None,
              std: float | None = None) -> np.ndarray:
  """Scales ``uint8`` images to [0, 1], then standardizes them.

  Args:
    images: ``uint8`` images.
    mean: the mean to subtract (of the [0, 1] pixels); the images' own mean
      when ``None``. Use the train split's for the test split.
    std: the standard deviation to divide by; the images' own when ``None``.

  Returns:
    ``float32`` images.

  Example:
    >>> import numpy as np
    >>> normalize(np.array([[0, 255]], np.uint8), mean=0.5, std=0.5).tolist()
    [[-1.0, 1.0]]
  """
  x = images.astype(np.float32) / 255.0
  mean = float(x.mean()) if mean is None else mean
  std = float(x.std()) if std is None else std
  if not std > 0:
    raise ValueError(f"std must be > 0, got {std!r}.")
  return (x - mean) / std
