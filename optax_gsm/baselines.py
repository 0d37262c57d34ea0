"""Pruning methods to compare GSM with, built on the same selection code.

* one-shot global magnitude pruning then fine-tuning: :func:`optax_gsm.prune`
  then ``optax.chain(opt, optax_gsm.keep_masked(masks))``;
* gradual magnitude pruning (Zhu & Gupta, 2017): :func:`gmp` with
  :func:`optax_gsm.polynomial_density_schedule`;
* SNIP at initialization (Lee et al., 2019): :func:`snip_masks`;
* lottery tickets (Frankle & Carbin, 2019): :func:`lottery_ticket`, a mask
  from trained weights applied to the initial ones, retrained with
  :func:`optax_gsm.keep_masked`.

Every mask here comes from :func:`optax_gsm.prune` or
:func:`optax_gsm.top_k_masks`: exact top-Q, ties to the lower index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_gsm import _jit
from optax_gsm import _pool
from optax_gsm import _pruning
from optax_gsm import _scores
from optax_gsm import _selection
from optax_gsm.schedules import polynomial_density_schedule  # re-export

SCOPES = ("global", "layer")


class GMPState(NamedTuple):
  """State of :func:`gmp`."""
  count: jax.Array  # shape (), int32: updates so far
  masks: Any  # bool per pooled leaf (True = kept), None elsewhere


def _leaf_masks(params: Any, flags: list[bool], density: jax.Array,
                scope: str, selection: str) -> Any:
  """Magnitude masks at ``density``, over the whole pool or leaf by leaf."""
  if scope == "global":
    return _pruning.prune(params, density=density, prunable=_prefix(params, flags),
                          selection=selection)[1]
  leaves, treedef = jax.tree.flatten(params)
  scores = _scores.pool_scores("magnitude", params, params, flags)
  scores = iter(scores)
  masks = []
  for leaf, flag in zip(leaves, flags):
    if not flag:
      masks.append(None)
      continue
    kept = _pool.num_kept(leaf.size, None, density, "gmp")
    masks.append(_selection.top_k_masks([next(scores)], kept,
                                        selection=selection)[0])
  return treedef.unflatten(masks)


def _prefix(params: Any, flags: list[bool]) -> Any:
  return jax.tree.unflatten(jax.tree.structure(params), flags)


def _gmp_step_fn(updates: Any, params: Any, old: Any, count: jax.Array, *,
                 flags: tuple[bool, ...], schedule: Any, begin_step: int,
                 end_step: int, update_every: int, scope: str,
                 selection: str) -> tuple[Any, Any]:
  """The masks (recomputed when due, else ``old``) and the masked updates."""
  due = ((count >= begin_step) & (count <= end_step)
         & (((count - begin_step) % update_every == 0)
            | (count == end_step)))
  masks = jax.lax.cond(
      due,
      lambda: _leaf_masks(params, list(flags), schedule(count), scope,
                          selection),
      lambda: old)
  updates, _ = _pruning.keep_masked(masks).update(
      updates, _pruning.KeepMaskedState(), params)
  return updates, masks


_gmp_step = _jit.cached_jit(_gmp_step_fn, (
    "flags", "schedule", "begin_step", "end_step", "update_every", "scope",
    "selection"))


def gmp(
    final_density: float,
    begin_step: int,
    end_step: int,
    update_every: int = 100,
    *,
    initial_density: float = 1.0,
    scope: str = "global",
    power: float = 3.0,
    prunable: _pool.Prunable = None,
    selection: str = "auto",
) -> optax.GradientTransformationExtraArgs:
  r"""Gradual magnitude pruning (Zhu & Gupta, 2017) as a transformation.

  Every ``update_every`` steps from ``begin_step``, and at ``end_step``, the masks
  are recomputed: the :math:`\lfloor N d_t \rfloor` largest :math:`|w|` are
  kept, with :math:`d_t` from :func:`optax_gsm.polynomial_density_schedule`,
  ranked over the whole pool (``scope="global"``, as :func:`optax_gsm.prune`)
  or within each leaf (``scope="layer"``, the paper's uniform sparsity). Between
  updates the masks are held: a pruned entry's update is :math:`-w`, as in
  :func:`optax_gsm.keep_masked`, so it lands on exactly 0. Put it last in
  the chain, after the optimizer.

  Args:
    final_density: density at and after ``end_step``, in (0, 1]; ``init``
      raises if it keeps no entry of the pool (of a pooled leaf with
      ``scope="layer"``).
    begin_step: the first step that prunes.
    end_step: the step that reaches ``final_density``.
    update_every: steps between mask updates.
    initial_density: density the schedule starts from (1 by default).
    scope: ``"global"`` or ``"layer"``.
    power: the schedule's exponent (3 in the paper).
    prunable: the pool, as in :func:`optax_gsm.gsm`.
    selection: the top-Q method, as in :func:`optax_gsm.gsm`.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose ``update`` needs
    ``params``; its state :class:`GMPState` holds the current ``masks``, ready
    for :func:`optax_gsm.keep_masked` or :func:`optax_gsm.sparsity_report`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import optax_gsm
    >>> params = {"w": jnp.array([[1.0, -4.0], [0.5, 3.0]]), "b": jnp.ones(2)}
    >>> opt = optax.chain(optax.sgd(0.0),
    ...                   optax_gsm.gmp(0.5, begin_step=0, end_step=1,
    ...                                 update_every=1))
    >>> state = opt.init(params)
    >>> zeros = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    >>> for _ in range(2):
    ...   updates, state = opt.update(zeros, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params["w"].tolist(), state[1].masks["b"] is None
    ([[0.0, -4.0], [0.0, 3.0]], True)

  References:
    Zhu & Gupta, `To prune, or not to prune: exploring the efficacy of pruning
    for model compression <https://arxiv.org/abs/1710.01878>`_, 2017
  """
  if scope not in SCOPES:
    raise ValueError(f"unknown scope {scope!r}; expected one of {SCOPES}.")
  _selection.check_selection(selection, traced_k=True)
  schedule = polynomial_density_schedule(
      final_density, begin_step, end_step, initial_density=initial_density,
      update_every=update_every, power=power)

  def init_fn(params):
    if _pool.is_params_placeholder(params):
      return _pool.placeholder_state(GMPState)
    flags = _pool.pooled_flags(prunable, params, "gmp")
    _pool.check_final_density(params, flags, final_density, "gmp",
                              per_leaf=scope == "layer")
    leaves, treedef = jax.tree.flatten(params)
    masks = [jnp.ones(jnp.shape(x), bool) if f else None
             for x, f in zip(leaves, flags)]
    return GMPState(count=jnp.zeros((), jnp.int32),
                    masks=treedef.unflatten(masks))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("gmp needs params: masks are ranked by |param|.")
    flags = _pool.pooled_flags(prunable, params, "gmp")
    _pool.check_state_fits(state, init_fn, params, "gmp")
    updates, masks = _gmp_step(
        updates, params, state.masks, state.count, flags=tuple(flags),
        schedule=schedule, begin_step=begin_step, end_step=end_step,
        update_every=update_every, scope=scope, selection=selection)
    return updates, GMPState(count=optax.safe_increment(state.count),
                             masks=masks)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def snip_masks(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    batch: Any,
    compression: Any = None,
    *,
    density: Any = None,
    sparsity: Any = None,
    prunable: _pool.Prunable = None,
    selection: str = "auto",
) -> Any:
  r"""SNIP (Lee et al., 2019): masks from :math:`|g \odot w|` at initialization.

  One gradient of ``loss_fn`` on one batch, then the global top
  :math:`Q = \lfloor N / C \rfloor` of the connection sensitivity
  :math:`|\partial L / \partial w \cdot w|` over the pool, i.e.
  ``optax_gsm.prune(params, ..., criterion="taylor", grads=g)``. Train the
  sparse net from ``apply_masks(params, masks)`` with
  :func:`optax_gsm.keep_masked`.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar``.
    params: the initial parameters.
    batch: one batch, passed to ``loss_fn`` as is.
    compression: C >= 1, total over kept entries. Give this or ``density``.
    density: d in (0, 1], kept over total entries.
    sparsity: or s in [0, 1), removed over total entries (d = 1 - s).
    prunable: the pool, as in :func:`optax_gsm.gsm`.
    selection: the top-Q method, as in :func:`optax_gsm.gsm`.

  Returns:
    Masks as :func:`optax_gsm.prune` returns them (bool per pooled leaf,
    ``None`` elsewhere).

  Example:
    >>> import jax.numpy as jnp
    >>> import optax_gsm
    >>> params = {"w": jnp.array([1.0, 2.0, 3.0])}
    >>> loss = lambda p, x: jnp.sum(p["w"] * x)
    >>> masks = optax_gsm.snip_masks(loss, params, jnp.array([3.0, 0.1, 1.0]),
    ...                              density=2 / 3, prunable={"w": True})
    >>> masks["w"].tolist()
    [True, False, True]

  References:
    Lee et al, `SNIP: Single-shot Network Pruning based on Connection
    Sensitivity <https://arxiv.org/abs/1810.02340>`_, 2019
  """
  if not callable(loss_fn):
    raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}.")
  compression, density = _pool.canonical_ratio(compression, density, sparsity,
                                               "snip_masks")
  _pool.validate_ratio(compression, density)
  grads = _scores.float_grad(loss_fn, params, batch)
  return _pruning.prune(params, compression, density=density,
                        prunable=prunable, criterion="taylor", grads=grads,
                        selection=selection)[1]


def lottery_ticket(
    init_params: Any,
    trained_params: Any,
    compression: Any = None,
    *,
    density: Any = None,
    sparsity: Any = None,
    prunable: _pool.Prunable = None,
    selection: str = "auto",
) -> tuple[Any, Any]:
  """A winning-ticket candidate: a global magnitude mask on the initial weights.

  The mask keeps the Q largest :math:`|w|` of ``trained_params`` over the
  pool (:func:`optax_gsm.prune`); the survivors are rewound to their values in
  ``init_params`` and the rest set to 0. Retrain with
  :func:`optax_gsm.keep_masked`. For a GSM ticket pass the params after GSM
  training as ``trained_params``.

  Args:
    init_params: the parameters at initialization.
    trained_params: the trained parameters, same structure and shapes.
    compression: C >= 1, total over kept entries. Give this or ``density``.
    density: d in (0, 1], kept over total entries.
    sparsity: or s in [0, 1), removed over total entries (d = 1 - s).
    prunable: the pool, as in :func:`optax_gsm.gsm`.
    selection: the top-Q method, as in :func:`optax_gsm.gsm`.

  Returns:
    ``(ticket_params, masks)``.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax_gsm
    >>> init = {"w": jnp.array([[0.1, 0.2], [0.3, 0.4]])}
    >>> trained = {"w": jnp.array([[5.0, 0.0], [0.1, -2.0]])}
    >>> ticket, masks = optax_gsm.lottery_ticket(init, trained, compression=2)
    >>> ticket["w"].tolist()
    [[0.10000000149011612, 0.0], [0.0, 0.4000000059604645]]

  References:
    Frankle & Carbin, `The Lottery Ticket Hypothesis: Finding Sparse,
    Trainable Neural Networks <https://arxiv.org/abs/1803.03635>`_, 2019
  """
  compression, density = _pool.canonical_ratio(compression, density, sparsity,
                                               "lottery_ticket")
  init_def, trained_def = (jax.tree.structure(init_params),
                           jax.tree.structure(trained_params))
  if init_def != trained_def:
    raise ValueError(
        "lottery_ticket: init_params and trained_params have different "
        f"structures: {init_def} vs {trained_def}.")
  for a, b in zip(jax.tree.leaves(init_params), jax.tree.leaves(trained_params)):
    if jnp.shape(a) != jnp.shape(b):
      raise ValueError(
          "lottery_ticket: init_params and trained_params differ in shape: "
          f"{jnp.shape(a)} vs {jnp.shape(b)}.")
  _, masks = _pruning.prune(trained_params, compression, density=density,
                            prunable=prunable, selection=selection)
  return _pruning.apply_masks(init_params, masks), masks
