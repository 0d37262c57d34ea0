"""Sparse export of hard-pruned params: BCOO arrays, values+indices files."""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from optax_gsm import _pool

_SEP = "/"
_TREE = "tree"  # the structure's entry: no "::", so no leaf's
# What follows "::" in the name of a leaf's entry.
_PARTS = ("dense", "values", "indices", "shape", "dtype")


def _pooled_with_zeros(params: Any, prunable: _pool.Prunable,
                       where: str) -> list[bool]:
  """Pool flags; raises if no pooled leaf holds a zero (nothing to compress)."""
  flags = _pool.pooled_flags(prunable, params, where)
  leaves = jax.tree.leaves(params)
  if not any(f and not np.all(np.asarray(x)) for x, f in zip(leaves, flags)):
    raise ValueError(
        f"{where}: no pooled leaf of params holds a zero, so there is nothing "
        "to export sparsely; hard-prune first (optax_gsm.prune or "
        "optax_gsm.apply_masks).")
  return flags


def to_bcoo(params: Any, prunable: _pool.Prunable = None) -> Any:
  """Pooled leaves as ``jax.experimental.sparse.BCOO``, the others as they are.

  Each pooled leaf stores only its non-zero entries (``nse`` = their count).

  Args:
    params: hard-pruned parameters (pruned entries exactly 0).
    prunable: the leaves to convert, as in :func:`optax_gsm.gsm`.

  Returns:
    A pytree like ``params`` with BCOO arrays in place of the pooled leaves.

  Raises:
    ValueError: if no pooled leaf holds a zero.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax_gsm
    >>> tree = optax_gsm.to_bcoo({"w": jnp.array([[0.0, 2.0], [0.0, 0.0]])})
    >>> tree["w"].nse, tree["w"].todense().tolist()
    (1, [[0.0, 2.0], [0.0, 0.0]])
  """
  flags = _pooled_with_zeros(params, prunable, "to_bcoo")
  leaves, treedef = jax.tree.flatten(params)
  return treedef.unflatten([
      sparse.BCOO.fromdense(x, nse=int(np.count_nonzero(np.asarray(x))))
      if f else x for x, f in zip(leaves, flags)])


def _index_dtype(size: int) -> np.dtype:
  for dtype in (np.uint8, np.uint16, np.uint32):
    if size - 1 <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  return np.dtype(np.uint64)


def _key(path: tuple) -> str:
  parts = [jax.tree_util.keystr((k,), simple=True) for k in path]
  for part in parts:
    if "::" in part or _SEP in part:
      raise ValueError(f"save_sparse: leaf name part {part!r} contains '::' "
                       f"or {_SEP!r}, which the file format reserves.")
  return _SEP.join(parts)


def _storable(x: np.ndarray) -> tuple[np.ndarray, str | None]:
  """``np.savez`` keeps only NumPy's own dtypes: others go as raw bits."""
  if x.dtype.kind == "V":  # bfloat16 and other ml_dtypes
    return x.view(f"u{x.dtype.itemsize}"), x.dtype.name
  return x, None


def sparse_arrays(params: Any, prunable: _pool.Prunable = None
                  ) -> dict[str, np.ndarray]:
  """Flat arrays for a file: values and flat indices of the pooled leaves.

  A pooled leaf at path ``a/b/kernel`` becomes ``a/b/kernel::values`` (its
  non-zeros, row-major), ``::indices`` (their flat positions in the smallest
  unsigned dtype that holds them) and ``::shape``; other leaves are stored
  dense as ``::dense``.

  Args:
    params: hard-pruned parameters: nested dicts of arrays.
    prunable: the leaves to store sparsely, as in :func:`optax_gsm.gsm`.

  Returns:
    A dict of NumPy arrays, ready for ``np.savez``.

  Example:
    >>> import jax.numpy as jnp
    >>> arrays = sparse_arrays({"w": jnp.array([[0.0, 2.0], [0.0, 3.0]])})
    >>> arrays["w::values"].tolist(), arrays["w::indices"].tolist()
    ([2.0, 3.0], [1, 3])
  """
  flags = _pooled_with_zeros(params, prunable, "sparse_arrays")
  arrays = {}
  for (path, x), f in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                          flags):
    key, (x, dtype_name) = _key(path), _storable(np.asarray(x))
    if dtype_name is not None:
      arrays[key + "::dtype"] = np.asarray(dtype_name)
    if f:
      flat = x.ravel()
      index = np.flatnonzero(flat)
      arrays[key + "::values"] = flat[index]
      arrays[key + "::indices"] = index.astype(_index_dtype(flat.size))
      arrays[key + "::shape"] = np.asarray(x.shape, np.int64)
    else:
      arrays[key + "::dense"] = x
  return arrays


def _skeleton(node: Any) -> Any:
  """JSON for the containers of ``node``, whose leaves are the arrays' names."""
  if node is None or isinstance(node, str):
    return node
  if type(node) in (list, tuple):
    return {type(node).__name__: [_skeleton(x) for x in node]}
  if isinstance(node, Mapping):
    for key in node:
      if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f"save_sparse: dict keys must be str or int, got "
                        f"{key!r}.")
    return {"dict": [[k, _skeleton(v)] for k, v in node.items()]}
  raise TypeError(
      "save_sparse stores arrays in dicts, lists, tuples and None; got a "
      f"{type(node).__name__} node. Convert it (e.g. to a dict) first.")


def _rebuild(skeleton: Any, leaves: dict[str, Any]) -> Any:
  if skeleton is None or isinstance(skeleton, str):
    return skeleton if skeleton is None else leaves[skeleton]
  (kind, items), = skeleton.items()
  if kind == "dict":
    return {key: _rebuild(value, leaves) for key, value in items}
  return {"list": list, "tuple": tuple}[kind](
      _rebuild(x, leaves) for x in items)


def save_sparse(file: Any, params: Any, prunable: _pool.Prunable = None, *,
                compress: bool = False) -> int:
  """Writes :func:`sparse_arrays` and the tree's structure to an ``.npz`` file.

  :func:`load_sparse` gives back the same tree: dicts (str or int keys; any
  mapping comes back as a dict), lists, tuples, ``None`` and empty
  containers, or a bare array. Other containers raise a ``TypeError``.

  Args:
    file: a path or a binary file object.
    params: hard-pruned parameters.
    prunable: the leaves to store sparsely, as in :func:`optax_gsm.gsm`.
    compress: also deflate the archive (``np.savez_compressed``).

  Returns:
    The number of bytes written.

  Example:
    >>> import io, jax.numpy as jnp
    >>> import optax_gsm
    >>> buf = io.BytesIO()
    >>> nbytes = optax_gsm.save_sparse(buf, {"w": [jnp.eye(2), jnp.eye(3)]})
    >>> _ = buf.seek(0)
    >>> optax_gsm.load_sparse(buf)["w"][1].tolist()[1]
    [0.0, 1.0, 0.0]
  """
  skeleton = _skeleton(jax.tree_util.tree_map_with_path(
      lambda path, _: _key(path), params))
  arrays = sparse_arrays(params, prunable)
  arrays[_TREE] = np.asarray(json.dumps(skeleton))
  buf = io.BytesIO()
  (np.savez_compressed if compress else np.savez)(buf, **arrays)
  data = buf.getvalue()
  if isinstance(file, (str, os.PathLike)):
    with open(file, "wb") as f:
      f.write(data)
  else:
    file.write(data)
  return len(data)


def _read_leaf(data: Any, name: str) -> jax.Array:
  if name + "::dense" in data.files:
    value = data[name + "::dense"]
  else:
    shape = tuple(int(s) for s in data[name + "::shape"])
    values = data[name + "::values"]
    value = np.zeros(int(np.prod(shape)), values.dtype)
    value[data[name + "::indices"].astype(np.int64)] = values
    value = value.reshape(shape)
  if name + "::dtype" in data.files:
    value = value.view(jnp.dtype(str(data[name + "::dtype"])))
  return jnp.asarray(value)


def _nested(leaves: dict[str, Any]) -> dict[str, Any]:
  """Nested dicts from ``a/b/kernel`` names (files without a tree entry)."""
  out: dict[str, Any] = {}
  for name, value in leaves.items():
    *parents, leaf = name.split(_SEP)
    node = out
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return out


def load_sparse(file: Any) -> Any:
  """Reads a :func:`save_sparse` file back into its tree of dense arrays.

  Args:
    file: a path or a binary file object.

  Returns:
    The parameters, ``jax.Array`` leaves in the tree that was saved.

  Raises:
    ValueError: naming the file, if it is not a :func:`save_sparse` file or
      is corrupt.
  """
  where = (os.fspath(file) if isinstance(file, (str, os.PathLike))
           else getattr(file, "name", "the file object"))
  try:
    with np.load(file) as data:
      unknown = [n for n in data.files if n != _TREE and (
          "::" not in n or n.rsplit("::", 1)[1] not in _PARTS)]
      if unknown or not data.files:
        shown = ", ".join(repr(n) for n in unknown[:3]) or "no array"
        raise ValueError(f"it holds {shown}, which save_sparse does not "
                         "write")
      names = sorted({n.rsplit("::", 1)[0] for n in data.files if "::" in n})
      leaves = {name: _read_leaf(data, name) for name in names}
      if _TREE not in data.files:  # written before the tree was stored
        return _nested(leaves)
      return _rebuild(json.loads(str(data[_TREE])), leaves)
  except FileNotFoundError:
    raise
  except (AttributeError, EOFError, IndexError, KeyError, OSError, TypeError,
          ValueError, zipfile.BadZipFile, zlib.error) as e:
    raise ValueError(f"load_sparse: {where} is not a save_sparse file, or "
                     f"it is corrupt: {type(e).__name__}: {e}") from e
