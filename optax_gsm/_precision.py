"""Float32 master weights, so that small updates to bf16/f16 params add up."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_gsm import _paths


class Float32MasterState(NamedTuple):
  """``master``: a float32 copy of every sub-32-bit floating leaf
  (``MaskedNode`` elsewhere); ``inner``: the wrapped transform's state, built
  on float32 params."""
  master: Any
  inner: Any


def needs_master(dtype: Any) -> bool:
  """Whether params of ``dtype`` lose small updates: floating, < 32 bits."""
  dtype = jnp.dtype(dtype)
  return bool(jnp.issubdtype(dtype, jnp.floating)) and dtype.itemsize < 4


def float32_master(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
  r"""Runs ``inner`` on float32 master copies of bf16/f16 params.

  A bfloat16 weight keeps 8 significant bits, so an update below half its
  spacing, such as GSM's per-step weight decay of a passive weight, rounds
  away in ``optax.apply_updates`` and the weight never shrinks. This wrapper
  keeps a float32 master :math:`m` of every sub-32-bit floating leaf
  :math:`w`, runs ``inner`` on float32 gradients and params (so its state,
  e.g. the momentum, is float32 too) and returns the update that moves
  :math:`w` to the rounded master:

  .. math::
    m \leftarrow m + u, \qquad u' = \mathrm{round}(m) - w.

  :math:`u'` is exact whenever :math:`\mathrm{round}(m)` and :math:`w` are
  within a factor of 2 (Sterbenz), so ``apply_updates`` lands on
  :math:`\mathrm{round}(m)`. Where :math:`w \neq \mathrm{round}(m)` (the params
  were changed outside the optimizer, e.g. restored or pruned) the master
  restarts from :math:`w`. Leaves of 32 bits or more pass through unchanged.

  Memory: 4 bytes per sub-32-bit param for the master, and ``inner``'s
  per-param state in float32 instead of the params' dtype (for momentum SGD
  on bf16 params: 8 bytes per param instead of 2).

  Args:
    inner: the optimizer to run in float32, e.g. :func:`optax_gsm.gsm_sgd`.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose ``update`` needs
    ``params``; its state is a :class:`Float32MasterState`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import optax_gsm
    >>> params = {"w": jnp.ones(2, jnp.bfloat16)}
    >>> grads = {"w": jnp.ones(2, jnp.bfloat16)}
    >>> for tx in (optax.sgd(1e-4), optax_gsm.float32_master(optax.sgd(1e-4))):
    ...   p, state = params, tx.init(params)
    ...   for _ in range(100):  # each step alone rounds away in bfloat16
    ...     updates, state = tx.update(grads, state, p)
    ...     p = optax.apply_updates(p, updates)
    ...   print(p["w"].tolist())
    [1.0, 1.0]
    [0.98828125, 0.98828125]
  """
  inner = optax.with_extra_args_support(inner)

  def to_float32(tree):
    return jax.tree.map(
        lambda x: x.astype(jnp.float32) if needs_master(x.dtype) else x, tree)

  def init_fn(params):
    master = jax.tree.map(
        lambda p: (jnp.asarray(p, jnp.float32) if needs_master(p.dtype)
                   else optax.MaskedNode()), params)
    return Float32MasterState(master=master,
                              inner=inner.init(to_float32(params)))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError("float32_master needs params: call update(updates, "
                       "state, params).")
    # optax.masked and multi_transform hand over MaskedNode for the leaves of
    # other groups: they are leaves here, as in the master, and pass through.
    p_leaves, treedef = jax.tree.flatten(params, is_leaf=_paths.is_masked_node)
    m_leaves = jax.tree.leaves(state.master, is_leaf=_paths.is_masked_node)
    if len(m_leaves) != len(p_leaves):
      raise ValueError("float32_master: the state was built for params of a "
                       "different structure.")
    # Resync the master where the params were changed from outside.
    masters = [m if _paths.is_masked_node(m) else
               jnp.where(m.astype(p.dtype) == p, m, p.astype(jnp.float32))
               for m, p in zip(m_leaves, p_leaves)]
    params32 = treedef.unflatten([p if _paths.is_masked_node(m) else m
                                  for m, p in zip(masters, p_leaves)])
    inner_updates, inner_state = inner.update(
        to_float32(updates), state.inner, params32, **extra_args)
    new_updates, new_master = [], []
    for u, m, p in zip(treedef.flatten_up_to(inner_updates), masters,
                       p_leaves):
      if _paths.is_masked_node(m):
        new_updates.append(u)
        new_master.append(m)
        continue
      m = m + u
      new_updates.append((m.astype(p.dtype).astype(jnp.float32)
                          - p.astype(jnp.float32)).astype(p.dtype))
      new_master.append(m)
    return (treedef.unflatten(new_updates),
            Float32MasterState(master=treedef.unflatten(new_master),
                               inner=inner_state))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def warn_low_precision(
    tx: optax.GradientTransformationExtraArgs, name: str,
) -> optax.GradientTransformationExtraArgs:
  """``tx`` whose ``init`` warns when params have a sub-32-bit float dtype.

  The state and the update are ``tx``'s own. The warning names the fix:
  :func:`float32_master` (``float32_master=True`` in ``name``).
  """

  def init_fn(params):
    low = sorted({jnp.dtype(x.dtype).name for x in jax.tree.leaves(params)
                  if hasattr(x, "dtype") and needs_master(x.dtype)})
    if low:
      warnings.warn(
          f"{name}: params of dtype {', '.join(low)} round away every update "
          "below half their spacing, so the weight decay of passive weights "
          "(about 3e-4 of a weight per step for a 20,000-step run) is lost "
          "and GSM does not prune. Pass float32_master=True (float32 master "
          "copies and momentum in the state, 8 bytes per such param) or use "
          "float32 params.", UserWarning, stacklevel=2)
    return tx.init(params)

  return optax.GradientTransformationExtraArgs(init_fn, tx.update)
