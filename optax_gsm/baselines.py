"""Pruning methods to compare GSM with, built on the same selection code.

* one-shot global magnitude pruning then fine-tuning: :func:`optax_gsm.prune`
  then ``optax.chain(opt, optax_gsm.keep_masked(masks))``;
* gradual magnitude pruning (Zhu & Gupta, 2017): :func:`gmp` with
  :func:`polynomial_density_schedule`;
* SNIP at initialization (Lee et al., 2019): :func:`snip_masks`;
* lottery tickets (Frankle & Carbin, 2019): :func:`lottery_ticket`, a mask
  from trained weights applied to the initial ones, retrained with
  :func:`optax_gsm.keep_masked`.

Every mask here comes from :func:`optax_gsm.prune` or
:func:`optax_gsm.top_k_masks`: exact top-Q, ties to the lower index.
"""

from __future__ import annotations

import numbers

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_gsm import _gsm
from optax_gsm import _pool
from optax_gsm import _pruning
from optax_gsm import _selection

SCOPES = ("global", "layer")


def _check_density(name: str, value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f"{name} must be a number in (0, 1], got {value!r}.")
  if not 0 < value <= 1:
    raise ValueError(f"{name} must lie in (0, 1], got {value!r}.")
  return float(value)


def _check_step(name: str, value: Any, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f"{name} must be an int, got {value!r}.")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}.")
  return int(value)


def polynomial_density_schedule(
    final_density: float,
    begin_step: int,
    end_step: int,
    *,
    initial_density: float = 1.0,
    update_every: int = 1,
    power: float = 3.0,
) -> optax.Schedule:
  r"""The gradual pruning schedule of Zhu & Gupta (2017), as a density.

  .. math::
    d_t = d_f + (d_i - d_f)\left(1 - \frac{t' - t_0}{t_1 - t_0}\right)^p,
    \qquad t' = t_0 + \Delta\lfloor (t - t_0) / \Delta \rfloor,

  clipped to :math:`d_i` before ``begin_step`` and to :math:`d_f` after
  ``end_step``; with :math:`p = 3` the network is pruned fast at first and
  slowly near the target. Steps before ``end_step`` are quantized to
  multiples of ``update_every`` (:math:`\Delta`) after ``begin_step``, the
  steps at which :func:`gmp` recomputes its masks. Built on ``optax.polynomial_schedule``.

  Args:
    final_density: :math:`d_f` in (0, 1], kept over total entries at the end.
    begin_step: :math:`t_0 \ge 0`, the first pruning step.
    end_step: :math:`t_1 > t_0`, the step that reaches ``final_density``.
    initial_density: :math:`d_i`, in [``final_density``, 1].
    update_every: :math:`\Delta \ge 1`.
    power: :math:`p > 0`.

  Returns:
    An ``optax.Schedule``: step count to density.

  Example:
    >>> import optax_gsm
    >>> sched = optax_gsm.polynomial_density_schedule(0.1, 0, 100)
    >>> [round(float(sched(t)), 4) for t in (0, 50, 100, 200)]
    [1.0, 0.2125, 0.1, 0.1]
  """
  final_density = _check_density("final_density", final_density)
  initial_density = _check_density("initial_density", initial_density)
  if initial_density < final_density:
    raise ValueError(
        f"initial_density={initial_density} must be >= final_density="
        f"{final_density}: gradual pruning only removes weights.")
  begin_step = _check_step("begin_step", begin_step, 0)
  end_step = _check_step("end_step", end_step, begin_step + 1)
  update_every = _check_step("update_every", update_every, 1)
  if not power > 0:
    raise ValueError(f"power must be > 0, got {power!r}.")
  poly = optax.polynomial_schedule(
      init_value=initial_density, end_value=final_density, power=power,
      transition_steps=end_step - begin_step, transition_begin=begin_step)

  def schedule(count):
    count = jnp.asarray(count)
    since = jnp.maximum(count - begin_step, 0)
    step = begin_step + since // update_every * update_every
    return poly(jnp.where(count >= end_step, end_step, step))

  return schedule


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
  scores = _gsm.pool_scores("magnitude", params, params, flags)
  scores = iter(scores)
  masks = []
  for leaf, flag in zip(leaves, flags):
    if not flag:
      masks.append(None)
      continue
    kept = _pool.num_kept(leaf.size, None, density)
    masks.append(_selection.top_k_masks([next(scores)], kept,
                                        selection=selection)[0])
  return treedef.unflatten(masks)


def _prefix(params: Any, flags: list[bool]) -> Any:
  return jax.tree.unflatten(jax.tree.structure(params), flags)


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
    selection: str = "histogram",
) -> optax.GradientTransformationExtraArgs:
  r"""Gradual magnitude pruning (Zhu & Gupta, 2017) as a transformation.

  Every ``update_every`` steps from ``begin_step``, and at ``end_step``, the masks
  are recomputed: the :math:`\lfloor N d_t \rfloor` largest :math:`|w|` are
  kept, with :math:`d_t` from :func:`polynomial_density_schedule`, ranked
  over the whole pool (``scope="global"``, as :func:`optax_gsm.prune`) or
  within each leaf (``scope="layer"``, the paper's uniform sparsity). Between
  updates the masks are held: a pruned entry's update is :math:`-w`, as in
  :func:`optax_gsm.keep_masked`, so it lands on exactly 0. Put it last in
  the chain, after the optimizer.

  Args:
    final_density: density at and after ``end_step``, in (0, 1].
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
    count = state.count
    due = ((count >= begin_step) & (count <= end_step)
           & (((count - begin_step) % update_every == 0)
              | (count == end_step)))
    masks = jax.lax.cond(
        due,
        lambda: _leaf_masks(params, flags, schedule(count), scope, selection),
        lambda: state.masks)
    updates, _ = _pruning.keep_masked(masks).update(
        updates, _pruning.KeepMaskedState(), params)
    return updates, GMPState(count=optax.safe_increment(count), masks=masks)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def snip_masks(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    batch: Any,
    compression: Any = None,
    *,
    density: Any = None,
    prunable: _pool.Prunable = None,
    selection: str = "histogram",
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
  _pool.validate_ratio(compression, density)
  grads = jax.grad(loss_fn)(params, batch)
  return _pruning.prune(params, compression, density=density,
                        prunable=prunable, criterion="taylor", grads=grads,
                        selection=selection)[1]


def lottery_ticket(
    init_params: Any,
    trained_params: Any,
    compression: Any = None,
    *,
    density: Any = None,
    prunable: _pool.Prunable = None,
    selection: str = "histogram",
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
