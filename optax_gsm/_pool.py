"""Which leaves are prunable, and how many of their entries to keep."""

from __future__ import annotations

import decimal
import fractions
import math
import numbers
import re
from collections.abc import Callable
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

from optax_gsm import _paths

Prunable = Union[None, Any, Callable[[Any], Any]]


# Leaf names (the last key of a leaf's path, lower case) that the default
# pool leaves out whatever their shape: biases (nnx.MultiHeadAttention's
# query/key/value biases are heads x head_dim, Equinox's conv bias is
# (C, 1, 1)), norm parameters and statistics, embedding and positional tables.
EXCLUDED_NAMES = frozenset({
    "bias", "biases", "scale", "mean", "var", "running_mean", "running_var",
    "gamma", "beta", "embedding", "embeddings", "pos", "pos_embed",
    "pos_embedding", "position_embedding", "position_embeddings",
    "positional_embedding", "cls_token", "class_token"})
# A key above the leaf that names a normalization layer (``norm``,
# ``LayerNorm_0``, ``ln1``, ``bn``, ``batch_norm``...): its weights are scales.
_NORM_KEY = re.compile(r"norm|^(ln|bn)(_?\d+)?$", re.IGNORECASE)


def _default_flag(leaf_name: str, x: Any) -> bool:
  if jnp.ndim(x) < 2 or not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
    return False
  keys = leaf_name.split("/")
  return (keys[-1].lower() not in EXCLUDED_NAMES
          and not any(_NORM_KEY.search(k) for k in keys[:-1]))


def default_prunable(params: Any) -> Any:
  """The default pool: weight matrices and convolution kernels.

  A leaf is pooled when it is floating with two or more dimensions (the
  kernels of dense, convolution and attention layers, as in the paper's
  code) and its path does not name it otherwise: a leaf whose last key is a
  bias, a norm parameter or statistic, an embedding or a positional table
  (``bias``, ``scale``, ``mean``, ``var``, ``embedding``, ``pos``,
  ``pos_embed``, ``cls_token``... see ``EXCLUDED_NAMES``), or that sits
  under a key naming a norm layer (``norm``, ``LayerNorm_0``, ``ln1``,
  ``bn``), stays out whatever its shape. Paths read alike for Linen dicts,
  ``nnx.State`` (with or without ``nnx.Variable`` wrappers) and Equinox
  modules. To add embeddings or positional tables, or to leave more out,
  use :func:`optax_gsm.prunable_by_path`.

  Args:
    params: a pytree of arrays.

  Returns:
    A pytree of bools shaped like ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> default_prunable({"w": jnp.ones((3, 2)), "b": jnp.ones(2)})
    {'b': False, 'w': True}
    >>> attn = {"query": {"kernel": jnp.ones((8, 2, 4)),
    ...                   "bias": jnp.ones((2, 4))}, "pos": jnp.ones((5, 8))}
    >>> default_prunable(attn)
    {'pos': False, 'query': {'bias': False, 'kernel': True}}
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, x: _default_flag(_paths.name(path), x), params)


def _as_patterns(name: str, patterns: Any) -> tuple[re.Pattern, ...]:
  if patterns is None:
    return ()
  if isinstance(patterns, (str, re.Pattern)):
    patterns = (patterns,)
  out = []
  for p in patterns:
    if not isinstance(p, (str, re.Pattern)):
      raise TypeError(f"prunable_by_path: {name} takes regular expressions "
                      f"(str), got {p!r}.")
    try:
      out.append(re.compile(p))
    except re.error as e:
      raise ValueError(f"prunable_by_path: {name} pattern {p!r} is not a "
                       f"regular expression: {e}.") from e
  return tuple(out)


def _some_names(names: list[str], n: int = 8) -> str:
  shown = ", ".join(names[:n])
  return shown + (f", ... ({len(names)} leaves)" if len(names) > n else "")


def prunable_by_path(include: Any = None, exclude: Any = None, *,
                     default: bool = True) -> Callable[[Any], Any]:
  """A pool chosen by leaf path, usable wherever ``prunable`` is taken.

  Leaves are named by their path with ``/`` between keys and without
  ``nnx.Variable``'s trailing ``value`` (``blocks/0/attn/query/kernel``,
  ``params/Dense_0/kernel``, ``layers/1/weight``), so one pool works on
  Linen dicts, ``nnx.State`` (the Variables ``nnx.Optimizer`` gives ``init``
  and the arrays it gives ``update``) and Equinox modules. A leaf is pooled
  when

  .. math::
    (\\text{default and } \\mathrm{default\\_prunable}
     \\text{ or some include matches}) \\text{ and no exclude matches},

  each pattern a regular expression searched (``re.search``) in the name.

  Args:
    include: a pattern or a sequence of them adding leaves, e.g.
      ``r"pos$"`` or ``r"embedding$"`` for positional and embedding tables.
    exclude: a pattern or a sequence of them removing leaves, e.g.
      ``r"^head/"`` to keep the classifier dense.
    default: start from :func:`optax_gsm.default_prunable` (``True``) or
      from an empty pool (``False``, so only ``include`` selects).

  Returns:
    A callable of ``params`` returning a pytree of bools shaped like it.
    It raises ``ValueError``, naming the pattern and some leaf paths, when a
    pattern matches no leaf or the pool comes out empty.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax_gsm
    >>> params = {"embed": {"embedding": jnp.ones((50, 8))},
    ...           "mlp": {"kernel": jnp.ones((8, 8)), "bias": jnp.ones(8)},
    ...           "head": {"kernel": jnp.ones((8, 2))}}
    >>> pool = optax_gsm.prunable_by_path(include=r"embedding$",
    ...                                   exclude=r"^head/")
    >>> pool(params)
    {'embed': {'embedding': True}, 'head': {'kernel': False}, 'mlp': {'bias': False, 'kernel': True}}
    >>> optax_gsm.prune(params, compression=4, prunable=pool)[1]["head"]
    {'kernel': None}
  """
  includes = _as_patterns("include", include)
  excludes = _as_patterns("exclude", exclude)
  if not isinstance(default, (bool, np.bool_)):
    raise TypeError(f"prunable_by_path: default must be a bool, got "
                    f"{default!r}.")
  if not default and not includes:
    raise ValueError("prunable_by_path: default=False needs include "
                     "patterns, or the pool is empty.")

  def pool(params: Any) -> Any:
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [_paths.name(path) for path, _ in flat]
    for kind, patterns in (("include", includes), ("exclude", excludes)):
      for p in patterns:
        if not any(p.search(n) for n in names):
          raise ValueError(
              f"prunable_by_path: {kind} pattern {p.pattern!r} matches no "
              f"leaf; the leaves are {_some_names(names)}.")
    flags = [((default and _default_flag(n, x))
              or any(p.search(n) for p in includes))
             and not any(p.search(n) for p in excludes)
             for n, (_, x) in zip(names, flat)]
    if not any(flags):
      raise ValueError(
          "prunable_by_path: the pool is empty (include="
          f"{[p.pattern for p in includes]}, exclude="
          f"{[p.pattern for p in excludes]}, default={default}); the "
          f"leaves are {_some_names(names)}.")
    return treedef.unflatten(flags)

  pool.include, pool.exclude, pool.default = includes, excludes, default
  return pool


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


def _is_bool(x: Any) -> bool:
  return isinstance(x, (bool, np.bool_)) or (
      hasattr(x, "dtype") and jnp.result_type(x) == jnp.bool_)


def is_bool_tree(prunable: Any) -> bool:
  """True if ``prunable`` is a pytree whose leaves are all bools.

  Such a tree is a pool, never a callable, even when its container is
  callable (an ``eqx.Module`` holding bools is).
  """
  leaves = jax.tree.leaves(prunable)
  return bool(leaves) and all(_is_bool(x) for x in leaves)


def pool_flags(prunable: Prunable, params: Any) -> list[bool]:
  """One bool per leaf of ``params`` (``jax.tree.leaves`` order): in the pool?

  Args:
    prunable: ``None`` (``default_prunable``), a pytree of bools shaped like
      ``params`` or a prefix of it (matched by leaf path when the containers
      differ, as the ``nnx.Variable`` wrappers of ``nnx.Optimizer``'s
      ``init`` and the arrays of its ``update`` do), or a callable of
      ``params`` returning one. A pytree of bools is never called, even if
      its container is callable (an ``eqx.Module``).
    params: the parameters.

  Returns:
    A list of Python bools, one per leaf.
  """
  if prunable is None:
    prunable = default_prunable
  if is_bool_tree(prunable) or not callable(prunable):
    tree = prunable
  else:
    tree = prunable(params)
  try:
    leaves = jax.tree.leaves(jax.tree.broadcast(tree, params))
  except ValueError as e:
    leaves = _paths.flags_by_path(tree, params)
    if leaves is None:
      raise ValueError(
          "prunable must be a pytree of bools shaped like params (or a "
          "prefix of it), matched by structure or by leaf path; got leaves "
          f"{_some_names(_paths.names(tree))} for params leaves "
          f"{_some_names(_paths.names(params))}.") from e
  flags = []
  for flag in leaves:
    if not isinstance(flag, (bool, np.bool_)):
      raise TypeError(
          "prunable must hold Python bools (static), got a leaf of type "
          f"{type(flag).__name__}.")
    flags.append(bool(flag))
  return flags


def check_pool(flags: list[bool], params: Any, where: str) -> None:
  """Raises if the pool is empty or holds a non-floating leaf."""
  if not any(flags):
    raise ValueError(
        f"{where}: prunable selects no leaf of params; the leaves are "
        f"{_some_names(_paths.names(params))}. (Under "
        "optax.inject_hyperparams a callable prunable is taken for a schedule "
        "and called with the step count unless named in static_args, e.g. "
        "static_args=(\"prunable\",).)")
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


def check_state_fits(state: Any, init_fn: Callable[[Any], Any], params: Any,
                     where: str) -> None:
  """Raises unless ``state`` is shaped as ``init_fn(params)`` shapes it.

  Compares the tree structure and every leaf's shape with
  ``jax.eval_shape(init_fn, params)``, which costs no compute, so a state
  built or restored for other params is refused instead of broadcast.
  """
  want = jax.eval_shape(init_fn, params)
  have_paths = jax.tree_util.tree_flatten_with_path(state)[0]
  want_paths = jax.tree_util.tree_flatten_with_path(want)[0]
  problem = None
  if jax.tree.structure(state) != jax.tree.structure(want):
    have_keys = [jax.tree_util.keystr(p) for p, _ in have_paths]
    want_keys = [jax.tree_util.keystr(p) for p, _ in want_paths]
    extra = [k for k in have_keys if k not in want_keys][:3]
    missing = [k for k in want_keys if k not in have_keys][:3]
    problem = (f"its {len(have_keys)} leaves do not match the "
               f"{len(want_keys)} that init(params) gives"
               + (f"; it has {', '.join(extra)}" if extra else "")
               + (f"; it lacks {', '.join(missing)}" if missing else ""))
  else:
    for (path, leaf), (_, spec) in zip(have_paths, want_paths):
      if jnp.shape(leaf) != spec.shape:
        problem = (f"its leaf {jax.tree_util.keystr(path)} has shape "
                   f"{jnp.shape(leaf)}, init(params) gives {spec.shape}")
        break
  if problem:
    raise ValueError(
        f"{where}: the state does not belong to these params (was it built "
        f"or restored for another model?): {problem}.")


def check_same_structure(updates: Any, params: Any, where: str) -> None:
  if jax.tree.structure(updates) != jax.tree.structure(params):
    raise ValueError(
        f"{where}: updates and params have different tree structures: "
        f"{jax.tree.structure(updates)} vs {jax.tree.structure(params)}.")


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
  """``value`` as an int in ``[low, high]``; Python and NumPy ints, no bools."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value,
                                                           numbers.Integral):
    raise TypeError(f"{name} must be an int, got {value!r}.")
  if value < low or (high is not None and value > high):
    bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
    raise ValueError(f"{name} must be {bound}, got {value}.")
  return int(value)


def _ratio(compression: Any, density: Any) -> tuple[str, Any]:
  return ("compression", compression) if density is None else ("density",
                                                                density)


def canonical_ratio(compression: Any, density: Any, sparsity: Any,
                    where: str) -> tuple[Any, Any]:
  """``(compression, density)``, with a sparsity s spelled as density 1 - s.

  A ratio has three spellings: ``compression`` C (total/kept, as the paper
  writes it), ``density`` d (kept/total) and ``sparsity`` s (removed/total,
  as jaxpruner and ``torch.nn.utils.prune`` write it); d = 1/C = 1 - s. At
  most one may be given; :func:`validate_ratio` then checks the one left.

  Args:
    compression: C, or None.
    density: d, or None.
    sparsity: s in [0, 1), or None; a number or a scalar float32/float64
      array (traced under ``optax.inject_hyperparams``).
    where: the caller's name, for the error.

  Returns:
    ``(compression, density)``. A given ``sparsity`` becomes the density
    ``1 - s``, a float computed in decimal on the shortest digits of s, so
    ``sparsity=0.9`` keeps exactly what ``density=0.1`` keeps; a traced s
    becomes ``1 - s`` in its own dtype (float32: up to N * 2**-25 more
    entries off than the same traced density).

  Raises:
    TypeError: if two spellings are given (naming both), or if ``sparsity``
      is not a number or a scalar float array.
    ValueError: if a concrete ``sparsity`` lies outside [0, 1).
  """
  given = [n for n, v in (("compression", compression), ("density", density),
                          ("sparsity", sparsity)) if v is not None]
  if len(given) > 1:
    raise TypeError(
        f"{where}: the ratio is given twice, as {' and '.join(given)}; give "
        "exactly one of compression (total/kept), density (kept/total) and "
        "sparsity (removed/total).")
  if sparsity is None:
    return compression, density
  if callable(sparsity):
    raise TypeError(
        "sparsity takes a number; to change it over training wrap the "
        "transformation in optax.inject_hyperparams and pass a schedule there.")
  dtype = getattr(sparsity, "dtype", None)
  if (isinstance(sparsity, (bool, np.bool_))
      or not isinstance(sparsity, (numbers.Real, jax.Array, np.ndarray))
      or jnp.ndim(sparsity) or dtype is not None and not (
          jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits >= 32
          or jnp.issubdtype(dtype, jnp.integer))):
    low = (dtype is not None and jnp.issubdtype(dtype, jnp.floating)
           and jnp.finfo(dtype).bits < 32)
    raise TypeError(
        "sparsity must be a number or a scalar float32/float64 array, got "
        f"{sparsity!r}." + (
            " optax.inject_hyperparams casts Python floats to the params' "
            "dtype: pass sparsity=jnp.float32(...) or "
            "optax.inject_hyperparams(..., hyperparam_dtype=jnp.float32)."
            if low else ""))
  if isinstance(sparsity, jax.core.Tracer):
    return None, 1 - sparsity  # injected: float32 (x64: float64) arithmetic
  value = np.asarray(sparsity)[()]
  if not 0 <= float(value) < 1:
    raise ValueError(f"sparsity must lie in [0, 1) (removed/total), got "
                     f"{sparsity!r}.")
  # 1 - s on the shortest decimal that reads back as s (in its own dtype),
  # so that sparsity=0.9 keeps exactly what density=0.1 keeps: in binary,
  # 1 - s carries s's rounding error, relative to the much smaller d.
  shortest = np.format_float_positional(
      value if jnp.issubdtype(value.dtype, jnp.floating) else float(value),
      unique=True, trim="0")
  return None, float(1 - decimal.Decimal(shortest))


def validate_ratio(compression: Any, density: Any) -> None:
  """Checks that exactly one of ``compression`` and ``density`` is given.

  It must be a number (no bool) or a scalar integer or float32/float64 array:
  ``optax.inject_hyperparams`` casts Python floats to the params' dtype, and
  bfloat16 or float16 would put Q = floor(N d) up to N d / 2**8 off. Numbers
  and concrete arrays are range-checked here (finite, C >= 1, 0 < d <= 1);
  traced arrays only by dtype.
  """
  if (compression is None) == (density is None):
    raise ValueError(
        "give exactly one of compression (total/kept, >= 1), density "
        "(kept/total, in (0, 1]) and sparsity (removed/total, in [0, 1)); got "
        f"compression={compression!r}, density={density!r}.")
  name, value = _ratio(compression, density)
  if callable(value):
    raise TypeError(
        f"{name} takes a number; to change it over training wrap the "
        "transformation in optax.inject_hyperparams and pass a schedule there.")
  dtype = getattr(value, "dtype", None)
  if (isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (numbers.Real, jax.Array, np.ndarray)) or jnp.ndim(value)
      or dtype is not None and not (jnp.issubdtype(dtype, jnp.integer)
                                    or jnp.issubdtype(dtype, jnp.floating))):
    raise TypeError(f"{name} must be a number or a scalar integer or float "
                    f"array, got {value!r}.")
  if dtype is not None and jnp.issubdtype(dtype, jnp.floating) and (
      jnp.finfo(dtype).bits < 32):
    raise TypeError(
        f"{name} has dtype {jnp.dtype(dtype).name}, too coarse to count "
        "entries. optax.inject_hyperparams casts Python floats to the params' "
        f"dtype: pass {name}=jnp.float32(...), optax_gsm.density_schedule, or "
        "a schedule wrapped in optax_gsm.checked_density_schedule (they are "
        "not cast), or optax.inject_hyperparams(..., "
        "hyperparam_dtype=jnp.float32).")
  if isinstance(value, jax.core.Tracer):
    return  # traced: only the dtype can be checked
  try:
    number = float(value)
  except OverflowError:
    number = math.inf
  if not math.isfinite(number):
    shown = repr(value) if len(repr(value)) < 40 else repr(value)[:36] + "..."
    raise ValueError(f"{name} must be finite, got {shown}.")
  if name == "compression" and not number >= 1:
    raise ValueError(f"compression must be >= 1 (total/kept), got {value!r}.")
  if name == "density" and not 0 < number <= 1:
    raise ValueError(f"density must lie in (0, 1], got {value!r}.")


def _significant_digits(decimal: str) -> int:
  """The number of significant digits of a positional decimal string."""
  return len(decimal.lstrip("-").replace(".", "").strip("0"))


def _concrete_ratio(value: Any) -> tuple[fractions.Fraction, fractions.Fraction]:
  """The ratio a concrete number or array stands for, and its slack.

  Integers (Python, NumPy or JAX) and floats that a short decimal names
  (``0.29``, ``np.float32(3.0)``, ``jnp.float32(0.9)``: no more significant
  digits than the dtype holds, 6 for float32 and 15 for float64) stand for
  that decimal exactly, with no slack. A float that needs every digit of its
  dtype was computed (``1 / 3``, ``1 / N``): it stands for its binary value,
  give or take one ulp of its dtype, the slack returned (relative to it).
  """
  x = np.asarray(value)
  if x.dtype.kind in "iub":
    return fractions.Fraction(int(x)), fractions.Fraction(0)
  if x.dtype in (np.float16, np.float32, np.float64):
    decimal = np.format_float_positional(x[()], unique=True, trim="-")
    if _significant_digits(decimal) <= np.finfo(x.dtype).precision:
      return fractions.Fraction(decimal), fractions.Fraction(0)
  number = float(x)
  ulp = fractions.Fraction(float(np.spacing(np.abs(x.astype(x.dtype))[()])))
  ratio = fractions.Fraction(number)
  return ratio, ulp / ratio if ratio else fractions.Fraction(0)


def num_kept(pool_size: int, compression: Any, density: Any,
             where: str = "num_kept", unit: str = "entries",
             name: str | None = None) -> Any:
  """Q = floor(pool_size / compression) or floor(pool_size * density).

  A number or concrete array is read as the ratio it names, exactly: an
  integer as itself and a float as the shortest decimal that rounds to it,
  so ``0.29``, ``np.float32(0.29)`` and ``jnp.float32(0.29)`` keep 29 of
  100 and ``np.float32(3.0)`` keeps floor(N / 3) at any N. Only a float that
  needs every digit of its dtype (a computed ``1 / 3``) gets a slack, one
  ulp of its own dtype: a product that close below an integer counts as
  that integer, so ``1 / N`` keeps 1. The slack is relative (at Q = 10**6
  it is 2e-10 entries for a Python float, 0.12 to 0.24 for a float32) and
  at most 1/4 entry.

  Traced arrays (injected hyperparameters) are computed in float32, or
  float64 with x64, whatever their dtype: an integral compression divides
  exactly (N < 2**32), and otherwise a product within 4 ulps of the ratio's
  own precision (relative to Q, at most 1/2) of an integer counts as that
  integer, so a schedule's 0.25 arriving as 0.24999997 keeps N/4.

  Args:
    pool_size: N, the number of prunable entries (or filters).
    compression: C >= 1, or None.
    density: d in (0, 1], or None.
    where: the caller's name, for the error.
    unit: what N counts, for the error.
    name: the ratio's argument name, for the error (default: its own).

  Returns:
    An int, or a uint32 array clipped to [0, N] when the ratio is traced.

  Raises:
    ValueError: if Q is concrete and 0.

  Example:
    >>> import numpy as np
    >>> num_kept(3_000_002, np.float32(3.0), None), num_kept(100, None, 0.29)
    (1000000, 29)
  """
  default_name, value = _ratio(compression, density)
  name = name or default_name
  if not isinstance(value, jax.core.Tracer):  # numbers and concrete arrays
    ratio, slack = _concrete_ratio(value)
    kept = pool_size / ratio if density is None else pool_size * ratio
    tol = min(slack * kept, fractions.Fraction(1, 4))
    q = math.ceil(kept) if math.ceil(kept) - kept <= tol else math.floor(kept)
    q = min(q, pool_size)
  else:
    dtype = value.dtype
    eps = float(jnp.finfo(dtype if jnp.issubdtype(dtype, jnp.floating)
                          else jnp.result_type(float)).eps)
    value = jnp.asarray(value, jnp.result_type(float))
    size = jnp.asarray(pool_size, value.dtype)
    kept = size / value if density is None else size * value
    tol = jnp.minimum(4 * eps * jnp.maximum(1.0, kept), 0.5)
    kept = jnp.where(jnp.abs(kept - jnp.round(kept)) <= tol, jnp.round(kept),
                     jnp.floor(kept))
    q = jnp.clip(kept, 0, size).astype(jnp.uint32)
    if density is None and pool_size < 2**32:
      # An integral compression (an injected int, jnp.float32(3.)) divides
      # exactly in uint32: no float rounding near Q = 10**6.
      integral = (value == jnp.round(value)) & (value >= 1) & (
          value < 2.0**32)
      divisor = jnp.where(integral, value, 1).astype(jnp.uint32)
      q = jnp.where(integral, jnp.uint32(pool_size) // divisor, q)
  if not isinstance(q, jax.core.Tracer) and q < 1:
    op = "/" if density is None else "*"
    raise ValueError(
        f"{where} keeps floor({pool_size} {unit} {op} {name} "
        f"{float(value):.8g}) = 0 {unit}; "
        f"{'lower' if density is None else 'raise'} the {name}.")
  return q


def check_final_density(params: Any, flags: list[bool], final_density: float,
                        where: str, per_leaf: bool = False) -> None:
  """Raises if ``final_density`` keeps 0 entries of the pool (or of a leaf)."""
  pooled = [(path, math.prod(jnp.shape(x))) for (path, x), f in zip(
      jax.tree_util.tree_flatten_with_path(params)[0], flags) if f]
  if not per_leaf:
    pooled = [((), sum(size for _, size in pooled))]
  for path, size in pooled:
    at = f" at leaf {jax.tree_util.keystr(path)}" if path else ""
    num_kept(size, None, final_density, where + at, name="final_density")
