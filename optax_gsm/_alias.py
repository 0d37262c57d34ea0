"""Optimizers as chains of the package's transformations, as optax's alias."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax

from optax_gsm import _gsm
from optax_gsm import _pool
from optax_gsm import _precision
from optax_gsm import _pruning
from optax_gsm import _scores

def _check_mask(mask: Any) -> None:
  """Raises for a bare bool: what a mask function returns when
  ``optax.inject_hyperparams`` calls it with the step count."""
  if isinstance(mask, str):
    raise ValueError(f"weight_decay_mask takes None, \"prunable\", a pytree "
                     f"or a callable of bools; got {mask!r}.")
  if isinstance(mask, (bool, np.bool_)) or (
      isinstance(mask, (jax.Array, np.ndarray)) and mask.dtype == bool
      and mask.ndim == 0):
    raise TypeError(
        f"weight_decay_mask is a single bool ({bool(mask)}), not a pytree of "
        "bools shaped like params: under optax.inject_hyperparams a mask "
        "function is taken for a schedule and called with the step count. "
        "Pass weight_decay_mask=\"prunable\", or name it in static_args: "
        "optax.inject_hyperparams(optax_gsm.gsm_sgd, "
        "static_args=(\"weight_decay_mask\",)). For no decay pass "
        "weight_decay=0.")


def _pool_mask(prunable: _pool.Prunable) -> Any:
  """A weight-decay mask function selecting the pool of ``prunable``."""
  def mask(params):
    return jax.tree.unflatten(jax.tree.structure(params),
                              _pool.pool_flags(prunable, params))
  return mask


def gsm_sgd(
    learning_rate: optax.ScalarOrSchedule,
    compression: Any = None,
    *,
    density: Any = None,
    sparsity: Any = None,
    momentum: float = 0.99,
    weight_decay: float = 5e-4,
    nesterov: bool = False,
    weight_decay_mask: Any = None,
    prunable: _pool.Prunable = None,
    criterion: _scores.Criterion = "taylor",
    selection: str | None = "auto",
    score_decay: float | None = None,
    prune_step: int | None = None,
    float32_master: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Global Sparse Momentum SGD: :func:`gsm`, weight decay, heavy-ball momentum.

  As the paper writes it, for every weight :math:`w` with momentum :math:`z`,

  .. math::
    z \leftarrow \beta z + \eta w + B \odot \partial L / \partial w, \qquad
    w \leftarrow w - \alpha z,

  where :math:`B` is 1 on the Q globally most important pooled entries (and on
  every entry outside the pool), 0 elsewhere. Weight decay and momentum act on
  every weight, so passive weights decay toward zero; momentum is never reset.

  Args:
    learning_rate: :math:`\alpha`, a number or an optax schedule.
    compression: C >= 1, total over kept entries. Give this or ``density``.
    density: d in (0, 1], kept over total entries.
    sparsity: or s in [0, 1), removed over total entries (d = 1 - s).
    momentum: :math:`\beta`; the paper uses 0.98 to 0.99.
    weight_decay: :math:`\eta`, L2 decay added inside the momentum buffer.
    nesterov: use Nesterov momentum (the paper's lottery-ticket code does).
    weight_decay_mask: the leaves that decay: ``None`` (all, the default,
      as the paper's equations write it), ``"prunable"`` (the pool only, as
      the paper's code does), or a pytree or callable of bools as
      ``optax.add_decayed_weights``'s ``mask``. Under
      ``optax.inject_hyperparams`` a callable is taken for a schedule unless
      named in ``static_args``; ``"prunable"`` needs no such care.
    prunable: the pool, as in :func:`gsm`.
    criterion: the importance score, as in :func:`gsm`.
    selection: the top-Q method, as in :func:`gsm`.
    score_decay: rank by a moving average of the score (our extension;
      ``None``, the default, is the paper's GSM), as in :func:`gsm`.
    prune_step: if given, the hard prune happens inside training at this
      update (our extension, :func:`optax_gsm.hard_prune_at`): the Q
      largest weights are kept, the rest set to exactly 0 and held there.
      The paper prunes after the last step; ``None`` (the default) does too.
    float32_master: run the whole chain on float32 master copies of bf16/f16
      params (:func:`optax_gsm.float32_master`; 8 bytes of state per such
      param for master and momentum), so that the decay of passive weights
      is not rounded away. When False, ``init`` warns on such params.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`: ``optax.chain(gsm(...),
    optax.add_decayed_weights(...), optax.trace(...),
    optax.scale_by_learning_rate(...))``, followed by
    ``optax_gsm.hard_prune_at(prune_step, ...)`` when ``prune_step`` is given,
    wrapped in :func:`optax_gsm.float32_master` when ``float32_master``.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import optax_gsm
    >>> params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]])}
    >>> loss = lambda p: jnp.sum(p["w"] ** 2)
    >>> opt = optax_gsm.gsm_sgd(0.1, compression=4, weight_decay=0.0)
    >>> state = opt.init(params)
    >>> grads = jax.grad(loss)(params)
    >>> updates, state = opt.update(grads, state, params)
    >>> optax.apply_updates(params, updates)["w"].tolist()
    [[1.0, -2.0], [0.5, 2.4000000953674316]]
  """
  compression, density = _pool.canonical_ratio(compression, density, sparsity,
                                               "gsm_sgd")
  if isinstance(weight_decay_mask, str) and weight_decay_mask == "prunable":
    weight_decay_mask = _pool_mask(prunable)
  else:
    _check_mask(weight_decay_mask)
  parts = [
      _gsm.gsm(compression, density=density, prunable=prunable,
          criterion=criterion, selection=selection, score_decay=score_decay),
      optax.add_decayed_weights(weight_decay, mask=weight_decay_mask),
      optax.trace(decay=momentum, nesterov=nesterov),
      optax.scale_by_learning_rate(learning_rate),
  ]
  if prune_step is not None:
    parts.append(_pruning.hard_prune_at(
        prune_step, compression, density=density, prunable=prunable,
        selection=selection))
  if float32_master:
    return _precision.float32_master(optax.chain(*parts))
  return _precision.warn_low_precision(optax.chain(*parts), "gsm_sgd")
