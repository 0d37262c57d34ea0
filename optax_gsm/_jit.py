"""One compilation per configuration for the transformations' eager calls.

Eagerly, JAX traces and compiles a ``lax.cond`` whose branches are fresh
closures, and a selection dispatched op by op, again on every call. The
transformations therefore run their array work through :func:`cached_jit`:
identical eager calls reuse one compilation, and under ``jax.jit`` it is
inlined as any jitted function is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax


def _static(value: Any) -> bool:
  """Python scalars and ``None``: hashable values that may pick a branch."""
  return value is None or isinstance(value, (bool, int, float, str))


def cached_jit(fn: Callable[..., Any],
               static_argnames: Sequence[str] = ()) -> Callable[..., Any]:
  """``jax.jit(fn)`` where keyword arguments given as Python scalars are static.

  ``static_argnames`` are always static (pool flags as a tuple, a criterion,
  a selection method); a keyword argument given as a Python number or
  ``None`` is static too (a concrete Q, a float decay), and as an array it is
  traced (an injected hyperparameter). If a static value cannot be hashed
  (a criterion object without ``__hash__``), ``fn`` runs as it is.

  Args:
    fn: the function; pass the arguments that may be static by keyword.
    static_argnames: the keyword arguments that are always static.

  Returns:
    A function with ``fn``'s signature.

  Example:
    >>> import jax.numpy as jnp
    >>> double = cached_jit(lambda x, *, k: x * k)
    >>> double(jnp.ones(2), k=3).tolist()
    [3.0, 3.0]
  """
  cache: dict[tuple[str, ...], Callable[..., Any]] = {}
  always = tuple(static_argnames)

  def call(*args: Any, **kwargs: Any) -> Any:
    extra = tuple(sorted(k for k, v in kwargs.items()
                         if k not in always and _static(v)))
    try:
      for name in always + extra:
        hash(kwargs.get(name))
    except TypeError:
      return fn(*args, **kwargs)
    jitted = cache.get(extra)
    if jitted is None:
      jitted = cache[extra] = jax.jit(fn, static_argnames=always + extra)
    return jitted(*args, **kwargs)

  return call
