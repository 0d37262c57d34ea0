"""Importance scores: the criteria GSM and the one-shot pruners rank by.

One floor below the transformations: ``_gsm``, ``_pruning``, the baselines and
the tuning helpers all score through here, and this module imports none of
them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import jax
import jax.numpy as jnp

from optax_gsm import _pool

Criterion = Union[str, Callable[[Any, Any], Any]]
CRITERIA = ("taylor", "magnitude")


def score_dtype(dtype: Any) -> Any:
  """Scores are computed in at least float32, so both paths rank the same."""
  return jnp.promote_types(dtype, jnp.float32)


def taylor_score(grads: Any, params: Any) -> Any:
  r"""First-order Taylor importance, :math:`|g \odot w|`, computed in >= f32.

  Args:
    grads: a pytree of gradients.
    params: a pytree of parameters with the same structure.

  Returns:
    A pytree of scores.

  Example:
    >>> import jax.numpy as jnp
    >>> taylor_score({"w": jnp.array([-2.0, 3.0])}, {"w": jnp.array([1.0, 0.5])})
    {'w': Array([2. , 1.5], dtype=float32)}
  """
  def score(g, w):
    dtype = score_dtype(jnp.result_type(g, w))
    return jnp.abs(g.astype(dtype) * w.astype(dtype))
  return jax.tree.map(score, grads, params)


def magnitude_score(grads: Any, params: Any) -> Any:
  """Magnitude importance, ``|w|``, computed in >= float32.

  Args:
    grads: a pytree of gradients (unused).
    params: a pytree of parameters.

  Returns:
    A pytree of scores.

  Example:
    >>> import jax.numpy as jnp
    >>> magnitude_score(None, {"w": jnp.array([-2.0, 3.0])})
    {'w': Array([2., 3.], dtype=float32)}
  """
  del grads
  return jax.tree.map(lambda w: jnp.abs(w.astype(score_dtype(w.dtype))),
                      params)


def criterion_fn(criterion: Criterion) -> Callable[[Any, Any], Any]:
  if callable(criterion):
    return criterion
  if criterion == "taylor":
    return taylor_score
  if criterion == "magnitude":
    return magnitude_score
  hint = ""
  if not isinstance(criterion, str):  # what a schedule returns
    hint = (" Under optax.inject_hyperparams a callable criterion is taken "
            "for a schedule and called with the step count: name it in "
            "static_args, e.g. optax.inject_hyperparams(optax_gsm.gsm, "
            "static_args=(\"criterion\",)).")
  raise ValueError(
      f"unknown criterion {criterion!r}; expected one of {CRITERIA} or a "
      "callable (grads, params) -> scores." + hint)


def grads_for(criterion: Criterion, grads: Any, params: Any,
              where: str) -> Any:
  """The gradients a one-shot prune scores with; zeros serve ``"magnitude"``.

  Raises unless ``grads`` is given for every criterion but ``"magnitude"``.
  """
  if grads is None:
    if criterion != "magnitude":
      raise ValueError(f"{where}: criterion={criterion!r} needs grads; only "
                       '"magnitude" ranks by the weights alone.')
    return jax.tree.map(jnp.zeros_like, params)
  _pool.check_same_structure(grads, params, where)
  return grads


def float_grad(fn: Callable[..., jax.Array], params: Any, *args: Any) -> Any:
  """``jax.grad(fn)(params, *args)`` over the floating leaves of ``params``.

  Other leaves (a step counter, a bool flag) are held fixed and get zeros, as
  they are never in the pool, instead of ``jax.grad``'s error.
  """
  leaves, treedef = jax.tree.flatten(params)
  floats = [jnp.issubdtype(jnp.result_type(x), jnp.inexact) for x in leaves]

  def of_floats(xs):
    xs = iter(xs)
    return fn(treedef.unflatten([next(xs) if f else x
                                 for x, f in zip(leaves, floats)]), *args)

  grads = iter(jax.grad(of_floats)([x for x, f in zip(leaves, floats) if f]))
  return treedef.unflatten([next(grads) if f else jnp.zeros_like(x)
                            for x, f in zip(leaves, floats)])


def pool_scores(criterion: Criterion, grads: Any, params: Any,
                flags: list[bool]) -> list[Any]:
  """Scores of the pool's leaves, in leaf order, by ``criterion``.

  The criterion sees ``grads`` and ``params`` with the leaves outside the pool
  set to ``None``, and must return a pytree of the same structure.
  """
  leaves_g, treedef = jax.tree.flatten(grads)
  leaves_w = treedef.flatten_up_to(params)
  pool_g = treedef.unflatten(
      [g if f else None for g, f in zip(leaves_g, flags)])
  pool_w = treedef.unflatten(
      [w if f else None for w, f in zip(leaves_w, flags)])
  scores = jax.tree.leaves(criterion_fn(criterion)(pool_g, pool_w))
  pooled = [w for w, f in zip(leaves_w, flags) if f]
  if len(scores) != len(pooled) or any(
      jnp.shape(s) != jnp.shape(w) for s, w in zip(scores, pooled)):
    raise ValueError(
        "criterion must return one score per pooled entry: a pytree shaped "
        "like the pooled params, with None outside the pool.")
  return scores
