"""WeightMom-style iterative pruning with magnitude hysteresis (our reading).

WeightMom (Johnson, Tang & Samudrala, 2022) prunes a weight when its magnitude
has stayed small over many past checks rather than at one instant, with a
per-layer threshold set by the layer's importance. Its formulas and code are
not public; every rule below is our reconstruction, not the paper's:

* checks happen every ``check_every`` steps from ``begin_step``;
* the target density :math:`d_t` follows
  :func:`optax_gsm.polynomial_density_schedule`, so WeightMom can be compared
  with GSM and GMP at equal compression;
* a layer's threshold is :math:`\\tau_l = \\tau\\, r_l` with the importance
  scale :math:`r_l = \\rho_l^{a} (n_l / \\bar n)^{b}`: :math:`\\rho_l` is
  the layer's kept fraction (an already sparse layer gets a lower threshold,
  so it is pruned less), :math:`n_l` its size and :math:`\\bar n` the mean
  pooled leaf size (a big layer is pruned more);
* the global :math:`\\tau` puts exactly :math:`\\lfloor N d_t \\rfloor`
  entries at or above it: weight :math:`i` of layer :math:`l` is *below* at a
  check iff :math:`m_i / r_l` is not among the top
  :math:`\\lfloor N d_t \\rfloor` over the pool (:func:`optax_gsm.top_k_masks`),
  where :math:`m_i` is an EMA of :math:`|w_i|` over checks;
* the last ``window`` (K) below-flags are kept per weight; a kept weight that
  was below at least ``min_below`` (M) times is a candidate, and candidates
  are pruned for good, smallest first, never going below the schedule's
  count; so pruning may lag the schedule, and checks go on after
  ``end_step``;
* hysteresis alone may stall (the weakest survivors can take turns below the
  threshold), so from step ``end_step + window * check_every`` on, a check
  keeps exactly :math:`\\lfloor N d_f \\rfloor` entries by scaled EMA
  magnitude, ignoring the history: the final density is exact.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_gsm import _jit
from optax_gsm import _pool
from optax_gsm import _pruning
from optax_gsm import _selection
from optax_gsm import schedules

_MAX_WINDOW = 32  # below-flags are the bits of a uint32


class WeightMomState(NamedTuple):
  """State of :func:`weightmom`."""
  count: jax.Array  # shape (), int32: updates so far
  masks: Any  # bool per pooled leaf (True = kept), None elsewhere
  ema: Any  # float32 EMA of |w| over checks per pooled leaf, None elsewhere
  history: Any  # uint32 per pooled entry: bit j = below at the j-th last check


def _scales(masks: list[jax.Array], sparsity_power: float,
            size_power: float) -> list[jax.Array]:
  """Per-layer threshold scale r_l = density_l**a * (n_l / mean n)**b."""
  mean_size = sum(m.size for m in masks) / len(masks)
  scales = []
  for m in masks:
    density = jnp.mean(m, dtype=jnp.float32)
    scale = density ** sparsity_power * (m.size / mean_size) ** size_power
    scales.append(jnp.maximum(scale, jnp.finfo(jnp.float32).tiny))
  return scales


def _check(params: list[jax.Array], state_leaves: tuple,
           kept_target: jax.Array, force: jax.Array, window_bits: jax.Array,
           min_below: int, ema_decay: float, sparsity_power: float,
           size_power: float, selection: str):
  """One pruning check on the pooled leaves; returns new masks, ema, history."""
  masks, ema, history, first = state_leaves
  # |w| before the cast: a complex weight's magnitude, not its real part.
  mags = [jnp.abs(w).astype(jnp.float32) * m for w, m in zip(params, masks)]
  ema = [jnp.where(first, a, ema_decay * e + (1 - ema_decay) * a)
         for e, a in zip(ema, mags)]
  scales = _scales(masks, sparsity_power, size_power)
  above = _selection.top_k_masks([e / r for e, r in zip(ema, scales)],
                                 kept_target, selection=selection)
  history = [((h << 1) | (~a).astype(jnp.uint32)) & window_bits
             for h, a in zip(history, above)]
  candidate = [m & (jax.lax.population_count(h) >= min_below)
               for m, h in zip(masks, history)]
  alive = sum(jnp.sum(m, dtype=jnp.uint32) for m in masks)
  num_candidates = sum(jnp.sum(c, dtype=jnp.uint32) for c in candidate)
  keep = jnp.where(force, kept_target,
                   jnp.maximum(kept_target, alive - num_candidates))
  # Kept non-candidates rank first (+inf), then candidates by EMA magnitude,
  # then pruned entries (-inf): the top `keep` drops the smallest candidates.
  # When forced, kept entries rank by scaled EMA magnitude alone.
  priority = [jnp.where(m & ~(c | force), jnp.inf,
                        jnp.where(m, e / r, -jnp.inf))
              for m, c, e, r in zip(masks, candidate, ema, scales)]
  masks = _selection.top_k_masks(priority, keep, selection=selection)
  return masks, ema, history


def _weightmom_step_fn(pooled: list[jax.Array], old: tuple, count: jax.Array,
                       *, schedule: Any, begin_step: int, check_every: int,
                       deadline: int | None, window: int, min_below: int,
                       ema_decay: float, sparsity_power: float,
                       size_power: float, selection: str) -> tuple:
  """A check when one is due (else the old masks, EMA and history).

  ``deadline=None``: the forced final count never comes (past int32).
  """
  due = (count >= begin_step) & ((count - begin_step) % check_every == 0)
  kept_target = _pool.num_kept(sum(x.size for x in pooled), None,
                               schedule(count), "weightmom")
  first = count == begin_step
  force = (count >= deadline) if deadline is not None else jnp.bool_(False)
  window_bits = jnp.uint32((1 << window) - 1)
  return jax.lax.cond(
      due,
      lambda: _check(pooled, (*old, first), kept_target, force, window_bits,
                     min_below, ema_decay, sparsity_power, size_power,
                     selection),
      lambda: tuple(old))


_weightmom_step = _jit.cached_jit(_weightmom_step_fn, (
    "schedule", "begin_step", "check_every", "deadline", "window",
    "min_below", "ema_decay", "sparsity_power", "size_power", "selection"))

# The int32 step count saturates at 2**31 - 1: a later step never comes.
_INT32_MAX = 2**31 - 1


def weightmom(
    final_density: float,
    begin_step: int,
    end_step: int,
    check_every: int = 100,
    *,
    window: int = 15,
    min_below: int = 10,
    initial_density: float = 1.0,
    power: float = 3.0,
    ema_decay: float = 0.0,
    sparsity_power: float = 1.0,
    size_power: float = 0.5,
    prunable: _pool.Prunable = None,
    selection: str = "auto",
) -> optax.GradientTransformationExtraArgs:
  r"""Momentum-of-magnitude pruning in the spirit of WeightMom (our reading).

  At each check (every ``check_every`` steps from ``begin_step``; see the
  module docstring for every rule), a pooled weight is flagged *below* when

  .. math::
    m_i / r_l < \tau, \qquad r_l = \rho_l^{a} (n_l / \bar n)^{b},

  with :math:`\tau` set so that exactly :math:`\lfloor N d_t \rfloor` entries
  are not below, :math:`d_t` the polynomial density schedule. A weight below
  in at least M of its last K checks is pruned for good (never below the
  schedule's count); pruned entries get the update :math:`-w`, as in
  :func:`optax_gsm.keep_masked`, so they stay exactly 0. Put it last in the
  chain. The density reaches ``final_density`` exactly, at the latest at the
  first check from step ``end_step + window * check_every``, where the count
  is enforced by magnitude alone.

  Args:
    final_density: kept fraction of the pool at the end, in (0, 1]; ``init``
      raises if it keeps no entry.
    begin_step: the first step that checks.
    end_step: the step where the schedule reaches ``final_density``.
    check_every: steps between checks.
    window: K, the number of past checks remembered, in [1, 32].
    min_below: M in [1, K]: below this many times out of K to be pruned.
    initial_density: the schedule's start (1 by default).
    power: the schedule's exponent.
    ema_decay: decay of the per-check EMA of :math:`|w|`; 0 uses the
      current magnitude.
    sparsity_power: :math:`a`, the weight of the layer's kept fraction.
    size_power: :math:`b`, the weight of the layer's relative size.
    prunable: the pool, as in :func:`optax_gsm.gsm`.
    selection: ``"auto"`` (the default), ``"histogram"``, ``"radix_count"``
      or ``"sort"``, as in :func:`optax_gsm.gsm`.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose ``update`` needs
    ``params``; its :class:`WeightMomState` holds ``masks``, the EMA
    and the below-flag ``history``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import optax_gsm
    >>> params = {"w": jnp.array([[1.0, -4.0], [0.5, 3.0]])}
    >>> tx = optax_gsm.weightmom(0.5, begin_step=0, end_step=1, check_every=1,
    ...                          window=3, min_below=2)
    >>> state = tx.init(params)
    >>> zeros = {"w": jnp.zeros((2, 2))}
    >>> for step in range(3):  # below at steps 1 and 2: pruned at the 2nd
    ...   updates, state = tx.update(zeros, state, params)
    ...   params = optax.apply_updates(params, updates)
    ...   print(step, params["w"].tolist())
    0 [[1.0, -4.0], [0.5, 3.0]]
    1 [[1.0, -4.0], [0.5, 3.0]]
    2 [[0.0, -4.0], [0.0, 3.0]]

  References:
    Johnson, Tang & Samudrala, `WeightMom: Learning Sparse Networks using
    Iterative Momentum-based pruning <https://arxiv.org/abs/2208.05970>`_,
    2022
  """
  window = _pool.check_int("window", window, 1, _MAX_WINDOW)
  min_below = _pool.check_int("min_below", min_below, 1, window)
  check_every = _pool.check_int("check_every", check_every, 1)
  if not 0 <= ema_decay < 1:
    raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay!r}.")
  _selection.check_selection(selection, traced_k=True)
  schedule = schedules.polynomial_density_schedule(
      final_density, begin_step, end_step, initial_density=initial_density,
      update_every=check_every, power=power)
  deadline = end_step + window * check_every

  def init_fn(params):
    if _pool.is_params_placeholder(params):
      return _pool.placeholder_state(WeightMomState)
    flags = _pool.pooled_flags(prunable, params, "weightmom")
    _pool.check_final_density(params, flags, final_density, "weightmom")
    leaves, treedef = jax.tree.flatten(params)
    def per_leaf(make):
      return treedef.unflatten([make(jnp.shape(x)) if f else None
                                for x, f in zip(leaves, flags)])
    return WeightMomState(
        count=jnp.zeros((), jnp.int32),
        masks=per_leaf(lambda shape: jnp.ones(shape, bool)),
        ema=per_leaf(lambda shape: jnp.zeros(shape, jnp.float32)),
        history=per_leaf(lambda shape: jnp.zeros(shape, jnp.uint32)))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("weightmom needs params: it prunes by |param|.")
    flags = _pool.pooled_flags(prunable, params, "weightmom")
    _pool.check_state_fits(state, init_fn, params, "weightmom")
    leaves, treedef = jax.tree.flatten(params)
    pooled = [x for x, f in zip(leaves, flags) if f]
    get = lambda tree: [x for x in jax.tree.leaves(tree) if x is not None]
    old = (get(state.masks), get(state.ema), get(state.history))
    masks, ema, history = _weightmom_step(
        pooled, old, state.count, schedule=schedule, begin_step=begin_step,
        check_every=check_every,
        deadline=deadline if deadline <= _INT32_MAX else None,
        window=window, min_below=min_below, ema_decay=ema_decay,
        sparsity_power=sparsity_power, size_power=size_power,
        selection=selection)
    count = state.count
    def unflatten(values):
      it = iter(values)
      return treedef.unflatten([next(it) if f else None for f in flags])
    mask_tree = unflatten(masks)
    updates, _ = _pruning.keep_masked(mask_tree).update(
        updates, _pruning.KeepMaskedState(), params)
    return updates, WeightMomState(
        count=optax.safe_increment(count), masks=mask_tree,
        ema=unflatten(ema), history=unflatten(history))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
