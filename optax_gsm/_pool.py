"""Which leaves are prunable, and how many of their entries to keep."""

from __future__ import annotations

import fractions
import math
from collections.abc import Callable
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

Prunable = Union[None, Any, Callable[[Any], Any]]


def default_prunable(params: Any) -> Any:
  """The default pool: floating leaves with two or more dimensions.

  These are the kernels of dense and convolution layers, as in the paper's
  code; biases, norm scales and scalars are left out.

  Args:
    params: a pytree of arrays.

  Returns:
    A pytree of bools shaped like ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> default_prunable({"w": jnp.ones((3, 2)), "b": jnp.ones(2)})
    {'b': False, 'w': True}
  """
  return jax.tree.map(
      lambda x: jnp.ndim(x) >= 2 and jnp.issubdtype(jnp.result_type(x),
                                                    jnp.inexact), params)


def is_params_placeholder(params: Any) -> bool:
  """True for the leafless stand-in that ``optax.tree.map_params`` inits on."""
  return (not jax.tree.leaves(params)
          and type(params).__name__ == "_ParamsPlaceholder")


def placeholder_state(state_cls: type) -> Any:
  """The state ``init`` gives the ``optax.tree.map_params`` stand-in.

  Every field is a scalar, so ``map_params`` treats none of them as a copy of
  the params (counts and masks are not params) and leaves them alone.
  """
  return state_cls(*(jnp.zeros((), jnp.int32) for _ in state_cls._fields))


def pool_flags(prunable: Prunable, params: Any) -> list[bool]:
  """One bool per leaf of ``params`` (``jax.tree.leaves`` order): in the pool?

  Args:
    prunable: ``None`` (``default_prunable``), a pytree of bools shaped like
      ``params`` or a prefix of it, or a callable of ``params`` returning one.
    params: the parameters.

  Returns:
    A list of Python bools, one per leaf.
  """
  if prunable is None:
    prunable = default_prunable
  tree = prunable(params) if callable(prunable) else prunable
  try:
    full = jax.tree.broadcast(tree, params)
  except ValueError as e:
    raise ValueError(
        "prunable must be a pytree of bools shaped like params (or a prefix "
        f"of it); got structure {jax.tree.structure(tree)} for params "
        f"{jax.tree.structure(params)}.") from e
  flags = []
  for flag in jax.tree.leaves(full):
    if not isinstance(flag, (bool, np.bool_)):
      raise TypeError(
          "prunable must hold Python bools (static), got a leaf of type "
          f"{type(flag).__name__}.")
    flags.append(bool(flag))
  return flags


def check_pool(flags: list[bool], params: Any, where: str) -> None:
  """Raises if the pool is empty or holds a non-floating leaf."""
  if not any(flags):
    raise ValueError(f"{where}: prunable selects no leaf of params.")
  for (path, leaf), flag in zip(
      jax.tree_util.tree_flatten_with_path(params)[0], flags):
    dtype = jnp.result_type(leaf)
    if flag and not jnp.issubdtype(dtype, jnp.inexact):
      raise TypeError(
          f"{where}: leaf {jax.tree_util.keystr(path)} of dtype {dtype} is in "
          "the prunable pool, but only floating leaves can be pruned.")


def pooled_flags(prunable: Prunable, params: Any, where: str) -> list[bool]:
  """``pool_flags``, checked: raises if the pool is empty or not floating."""
  flags = pool_flags(prunable, params)
  check_pool(flags, params, where)
  return flags


def check_same_structure(updates: Any, params: Any, where: str) -> None:
  if jax.tree.structure(updates) != jax.tree.structure(params):
    raise ValueError(
        f"{where}: updates and params have different tree structures: "
        f"{jax.tree.structure(updates)} vs {jax.tree.structure(params)}.")


def validate_ratio(compression: Any, density: Any) -> None:
  """Checks that exactly one of ``compression`` and ``density`` is given.

  Python numbers are range-checked here; arrays (as ``inject_hyperparams``
  passes them) are checked where they are concrete.
  """
  if (compression is None) == (density is None):
    raise ValueError(
        "give exactly one of compression (total/kept, >= 1) and density "
        f"(kept/total, in (0, 1]); got compression={compression!r}, "
        f"density={density!r}.")
  value = compression if density is None else density
  if callable(value):
    raise TypeError(
        "compression and density take a number; to change them over "
        "training wrap the transformation in optax.inject_hyperparams and "
        "pass a schedule there.")
  try:
    number = float(value)
  except jax.errors.ConcretizationTypeError:
    return  # traced: nothing to check statically
  if density is None and not number >= 1:
    raise ValueError(f"compression must be >= 1 (total/kept), got {value!r}.")
  if compression is None and not 0 < number <= 1:
    raise ValueError(f"density must lie in (0, 1], got {value!r}.")


def num_kept(pool_size: int, compression: Any, density: Any) -> Any:
  """Q = floor(pool_size / compression) or floor(pool_size * density).

  For Python numbers the product is exact (fractions of the binary values);
  one within a relative 2**-50 of an integer, i.e. off only by the rounding
  of the ratio to binary, counts as that integer: ``density=0.29`` keeps 29
  of 100 (not floor(28.999999999999996)) and ``density=1/N`` keeps 1.
  Arrays (traced hyperparameters) are computed in their own floating
  precision, float32 unless x64 is on: a product within 4 ulps of an integer
  counts as it (a schedule's 0.25 may arrive as 0.24999997), and beyond
  2**22 pooled entries float32 may put Q one or two entries off.

  Args:
    pool_size: N, the number of prunable entries.
    compression: C >= 1, or None.
    density: d in (0, 1], or None.

  Returns:
    An int, or a uint32 array when the ratio is an array.
  """
  value = compression if density is None else density
  if isinstance(value, (int, float, np.integer, np.floating)):
    ratio = fractions.Fraction(float(value))
    kept = pool_size / ratio if density is None else pool_size * ratio
    nearest = round(kept)
    if abs(kept - nearest) <= max(1, kept) * fractions.Fraction(1, 2**50):
      return int(nearest)
    return math.floor(kept)
  value = jnp.asarray(value, jnp.result_type(float))
  size = jnp.asarray(pool_size, value.dtype)
  kept = size / value if density is None else size * value
  nearest = jnp.round(kept)
  ulp = jnp.finfo(kept.dtype).eps * jnp.maximum(1.0, kept)
  kept = jnp.where(jnp.abs(kept - nearest) <= jnp.minimum(4 * ulp, 1e-3),
                   nearest, jnp.floor(kept))
  return jnp.clip(kept, 0, size).astype(jnp.uint32)
