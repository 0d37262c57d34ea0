"""Global Sparse Momentum: the gradient mask and the GSM optimizer."""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_gsm import _jit
from optax_gsm import _pool
from optax_gsm import _scores
from optax_gsm import _selection

class GSMState(NamedTuple):
  """State of :func:`gsm`."""
  count: jax.Array  # shape (), int32: updates so far
  active: Any  # per leaf: uint32 count of active entries; MaskedNode if unpooled
  # Per pooled leaf: the moving average of the score (``score_decay > 0``),
  # float32 or wider; MaskedNode if unpooled; () for the paper's GSM.
  scores: Any = ()


def _check_static_prunable(prunable: _pool.Prunable) -> None:
  if prunable is None or callable(prunable):
    return
  flags = jax.tree.leaves(prunable)
  if not any(flags):
    hint = ""
    if isinstance(prunable, (bool, np.bool_)):  # a function of the count
      hint = (" Under optax.inject_hyperparams a callable prunable is taken "
              "for a schedule and called with the step count: name it in "
              "static_args, e.g. optax.inject_hyperparams(optax_gsm.gsm, "
              "static_args=(\"prunable\",)).")
    raise ValueError("prunable selects no leaf: every flag is False." + hint)


def _check_score_decay(score_decay: Any) -> Any:
  """``None`` (the paper's rule), a float in [0, 1), or a scalar float array.

  An array is what ``optax.inject_hyperparams`` passes; a concrete one is
  range-checked, a traced one is used as it is.
  """
  if score_decay is None:
    return None
  if isinstance(score_decay, (jax.Array, np.ndarray)):
    if jnp.shape(score_decay) == () and jnp.issubdtype(score_decay.dtype,
                                                       jnp.integer):
      score_decay = score_decay.astype(jnp.float32)  # an injected int 0
    if jnp.shape(score_decay) != () or not jnp.issubdtype(
        score_decay.dtype, jnp.floating):
      raise TypeError("score_decay must be a number in [0, 1) or a scalar "
                      f"float array, got {score_decay!r}.")
    if jnp.finfo(score_decay.dtype).bits < 32:
      raise TypeError(
          f"score_decay has dtype {jnp.dtype(score_decay.dtype).name}, too "
          "coarse for a decay (0.999 rounds to 1.0 in bfloat16, which "
          "freezes the averages at 0). optax.inject_hyperparams casts Python "
          "floats to the params' dtype: pass score_decay=jnp.float32(...) "
          "or optax.inject_hyperparams(..., hyperparam_dtype=jnp.float32).")
    if not isinstance(score_decay, jax.core.Tracer) and not (
        0 <= float(score_decay) < 1):
      raise ValueError(
          f"score_decay must lie in [0, 1), got {float(score_decay)!r}.")
    return score_decay
  if isinstance(score_decay, bool) or not isinstance(score_decay,
                                                     numbers.Real):
    raise TypeError("score_decay must be a number in [0, 1), got "
                    f"{score_decay!r}.")
  if not 0 <= score_decay < 1:
    raise ValueError(f"score_decay must lie in [0, 1), got {score_decay!r}.")
  return float(score_decay)


def _average_dtype(dtype: Any) -> Any:
  """The averaged scores' dtype: real (a complex weight scores ``|g w|``),
  float32 or wider."""
  return jnp.finfo(_scores.score_dtype(dtype)).dtype


def _averages_scores(score_decay: Any) -> bool:
  """Whether the state holds averaged scores: a positive or injected decay."""
  return score_decay is not None and (
      not isinstance(score_decay, float) or score_decay > 0)


def smooth_scores(average: list[Any], scores: list[Any], params: list[Any],
                  decay: float) -> list[Any]:
  r"""One step of the scores' moving average, :math:`s \leftarrow \rho s +
  (1 - \rho) T`, reset to 0 on entries whose weight is exactly 0 (a zero
  weight scores :math:`|g \cdot 0| = 0`, so a pruned entry drops out)."""
  out = []
  for a, t, w in zip(average, scores, params):
    rho = jnp.asarray(decay, a.dtype)
    out.append(jnp.where(w == 0, jnp.zeros((), a.dtype),
                         rho * a + (1 - rho) * t.astype(a.dtype)))
  return out


def mask_pooled(updates: Any, flags: list[bool],
                masks: list[jax.Array]) -> tuple[Any, Any]:
  """Zeroes the pooled leaves of ``updates`` where their mask is False.

  Args:
    updates: the gradient pytree.
    flags: one bool per leaf, True for the pooled leaves.
    masks: one bool array per pooled leaf, in leaf order.

  Returns:
    ``(masked updates, active)``: ``active`` holds each pooled leaf's number
    of True entries (uint32) and ``optax.MaskedNode()`` for the others.
  """
  leaves, treedef = jax.tree.flatten(updates)
  masks = iter(masks)
  new_leaves, active = [], []
  for g, f in zip(leaves, flags):
    if f:
      mask = next(masks)
      new_leaves.append(jnp.where(mask, g, jnp.zeros((), g.dtype)))
      active.append(jnp.sum(mask, dtype=jnp.uint32))
    else:
      new_leaves.append(g)
      active.append(optax.MaskedNode())
  return treedef.unflatten(new_leaves), treedef.unflatten(active)


def _gsm_step_fn(pool_updates: Any, pool_params: Any, averages: list[Any],
                 *, kept: Any, decay: Any, criterion: _scores.Criterion,
                 selection: str) -> tuple[list[Any], list[Any], list[Any]]:
  """Scores, their moving average (if ``averages``), the top-Q masks.

  ``pool_updates`` and ``pool_params`` hold ``None`` outside the pool, as
  the criterion sees them.

  Returns:
    ``(masked pooled updates, active counts, new averages)`` in leaf order.
  """
  pooled_u = jax.tree.leaves(pool_updates)
  pooled_w = jax.tree.leaves(pool_params)
  scores = _scores.pool_scores(criterion, pool_updates, pool_params,
                               [True] * len(pooled_w))
  if averages:
    scores = averages = smooth_scores(averages, scores, pooled_w, decay)
  masks = _selection.top_k_masks(scores, kept, selection=selection)
  return ([jnp.where(m, g, jnp.zeros((), g.dtype))
           for m, g in zip(masks, pooled_u)],
          [jnp.sum(m, dtype=jnp.uint32) for m in masks], averages)


_gsm_step = _jit.cached_jit(_gsm_step_fn, ("criterion", "selection"))


def gsm(
    compression: Any = None,
    *,
    density: Any = None,
    sparsity: Any = None,
    prunable: _pool.Prunable = None,
    criterion: _scores.Criterion = "taylor",
    selection: str | None = "auto",
    score_decay: float | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Masks the gradient of all but the Q globally most important weights.

  Every step the entries of all prunable leaves are ranked together by their
  score, by default the first-order Taylor importance :math:`|g \odot w|` on
  the raw gradient; the top

  .. math::
    Q = \lfloor N / C \rfloor = \lfloor N d \rfloor

  of the N pooled entries keep their gradient and the rest get 0. Leaves
  outside the pool pass through. Put it first in a chain, before weight decay
  and momentum, so that passive weights still decay (:func:`gsm_sgd`).

  Exactly Q entries are active: ties go to the lower index in leaf order
  (``jax.tree.leaves``), then row-major, and NaN scores rank last.

  With ``score_decay`` :math:`\rho > 0` (our extension, beyond the paper) the
  ranking uses a moving average of the score instead of this step's,

  .. math::
    s_t = \rho\, s_{t-1} + (1 - \rho)\, T_t, \qquad s_{-1} = 0,

  reset to 0 where a weight is exactly 0. A minibatch's Taylor score is
  noisy: with the paper's rule about half of the active set changes every
  step on LeNet-300-100, so many more than Q weights keep a sizeable
  magnitude and the final hard prune removes weights the network uses.
  Averaging over about :math:`1/(1-\rho)` steps keeps the active set stable,
  so that the passive weights do decay away (docs/lossless.md).

  Args:
    compression: C >= 1, total over kept entries. Give this or ``density``.
    density: d in (0, 1], kept over total entries. Both may be arrays, so
      ``optax.inject_hyperparams`` can inject them or a schedule of them.
    sparsity: or s in [0, 1), removed over total entries (d = 1 - s).
    prunable: the pool: ``None`` for :func:`optax_gsm.default_prunable`
      (kernels: floating leaves with ``ndim >= 2``, no biases or norms), a
      pytree of bools (or a prefix of one), or a callable of params giving
      one, as in ``optax.masked``.
    criterion: ``"taylor"`` (:math:`|g w|`), ``"magnitude"`` (:math:`|w|`),
      or a callable ``(grads, params) -> scores`` that receives the trees
      with ``None`` outside the pool.
    selection: ``"auto"`` (the default, or ``None``): ``"histogram"`` when
      compiled for the CPU and ``"radix_count"`` on GPU and TPU, chosen at
      lowering time. ``"histogram"`` is an exact radix select by scatter-add
      histograms, ``"radix_count"`` the same select by compare-and-count
      reductions (no scatter), ``"top_k"`` ``jax.lax.top_k`` on the
      concatenated scores (static ratio only), ``"sort"`` a stable argsort.
      All give the same mask (:func:`optax_gsm.top_k_masks`).
    score_decay: :math:`\rho` in [0, 1): ``None`` or 0 (the default) ranks
      by this step's score, as the paper does; e.g. 0.99 ranks by a moving
      average over about 100 steps. The state then holds one float32 per
      pooled entry. An array works too (``optax.inject_hyperparams`` injects
      one when ``score_decay`` is given to it); the state then always holds
      the averages, and :math:`\rho = 0` gives the paper's mask. An array
      must be float32 or wider: ``inject_hyperparams`` casts a Python float
      to the params' dtype, and bfloat16 rounds 0.999 to 1.0, so with such
      params pass ``jnp.float32(0.999)`` or ``hyperparam_dtype=jnp.float32``.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose ``update`` needs
    ``params``; its state :class:`GSMState` counts the active entries per
    pooled leaf (and holds the averaged scores).

  Example:
    >>> import jax.numpy as jnp
    >>> import optax_gsm
    >>> params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.ones(2)}
    >>> grads = {"w": jnp.array([[1.0, 1.0], [1.0, 1.0]]), "b": jnp.ones(2)}
    >>> tx = optax_gsm.gsm(compression=2)
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> updates["w"].tolist(), updates["b"].tolist(), int(state.active["w"])
    ([[0.0, 1.0], [0.0, 1.0]], [1.0, 1.0], 2)

  References:
    Ding et al, `Global Sparse Momentum SGD for Pruning Very Deep Neural
    Networks <https://arxiv.org/abs/1909.12778>`_, 2019
  """
  compression, density = _pool.canonical_ratio(compression, density, sparsity,
                                               "gsm")
  _pool.validate_ratio(compression, density)
  _scores.criterion_fn(criterion)
  _selection.check_selection(selection)
  _check_static_prunable(prunable)
  score_decay = _check_score_decay(score_decay)
  averages = _averages_scores(score_decay)

  def init_fn(params):
    if _pool.is_params_placeholder(params):
      state = _pool.placeholder_state(GSMState)
      return state if averages else state._replace(scores=())
    flags = _pool.pooled_flags(prunable, params, "gsm")
    leaves, treedef = jax.tree.flatten(params)
    pool_size = sum(math.prod(jnp.shape(x))  # ShapeDtypeStructs too
                    for x, f in zip(leaves, flags) if f)
    _pool.num_kept(pool_size, compression, density, "gsm")
    active = [jnp.zeros((), jnp.uint32) if f else optax.MaskedNode()
              for f in flags]
    scores = ()
    if averages:
      scores = treedef.unflatten([
          jnp.zeros(jnp.shape(x), _average_dtype(x.dtype)) if f
          else optax.MaskedNode() for x, f in zip(leaves, flags)])
    return GSMState(count=jnp.zeros((), jnp.int32),
                    active=treedef.unflatten(active), scores=scores)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError(
          "gsm needs params: call update(updates, state, params), since the "
          "Taylor score is |grad * param|.")
    _pool.check_same_structure(updates, params, "gsm")
    flags = _pool.pooled_flags(prunable, params, "gsm")
    if averages == (isinstance(state.scores, tuple) and not state.scores):
      raise ValueError(
          "gsm: the state was built with a different score_decay (it "
          f"{'lacks' if averages else 'holds'} averaged scores).")
    _pool.check_state_fits(state, init_fn, params, "gsm")
    pool_size = sum(math.prod(jnp.shape(w)) for w, f in
                    zip(jax.tree.leaves(params), flags) if f)
    kept = _pool.num_kept(pool_size, compression, density, "gsm")
    leaves_u, treedef = jax.tree.flatten(updates)
    leaves_w = treedef.flatten_up_to(params)
    pooled_u, counts, new_averages = _gsm_step(
        treedef.unflatten([u if f else None for u, f in zip(leaves_u, flags)]),
        treedef.unflatten([w if f else None for w, f in zip(leaves_w, flags)]),
        jax.tree.leaves(state.scores), kept=kept, decay=score_decay,
        criterion=criterion, selection=selection)
    pooled_u, counts = iter(pooled_u), iter(counts)
    updates = treedef.unflatten([next(pooled_u) if f else u
                                 for u, f in zip(leaves_u, flags)])
    active = treedef.unflatten([next(counts) if f else optax.MaskedNode()
                                for f in flags])
    averaged = (jax.tree.structure(state.scores).unflatten(new_averages)
                if averages else ())
    return updates, GSMState(count=optax.safe_increment(state.count),
                             active=active, scores=averaged)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
