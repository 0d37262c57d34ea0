r"""Hyperparameters that let GSM's passive weights vanish, and a prune gauge.

A passive weight gets no loss gradient, only weight decay :math:`\eta` inside
heavy-ball momentum :math:`\beta` (:func:`optax_gsm.gsm_sgd`):

.. math::
  z \leftarrow \beta z + \eta w, \qquad w \leftarrow w - \alpha_k z.

For small :math:`\alpha_k \eta` it shrinks by about
:math:`\alpha_k \eta / (1 - \beta)` per step, so after the run by about
:math:`\exp(-E)` with the *passive decay exponent*

.. math::
  E = \frac{\eta}{1 - \beta} \sum_k \alpha_k.

:func:`passive_decay_exponent` computes E, :func:`weight_decay_for` the
:math:`\eta` that reaches a target E, and :func:`prune_share` how much of
the pool's squared norm a hard prune would remove now.

With a *decoupled* decay (``optax.adamw``, whose update is
:math:`-\alpha_k(\hat m / \sqrt{\hat v} + \eta w)`), the Adam part of a
passive weight fades with its moments and the decay alone acts:
:math:`w \leftarrow (1 - \alpha_k \eta) w`, so :math:`E = \eta \sum_k
\alpha_k`, whatever the momentum (``decoupled=True``).

Momentum caps the speed: the slower root of
:math:`\lambda^2 - (1 + \beta - \alpha\eta)\lambda + \beta = 0` never goes
below :math:`\sqrt\beta` in modulus, so a passive weight shrinks by at most
:math:`-\tfrac12 \ln \beta` per step (0.005 at :math:`\beta = 0.99`), and
beyond :math:`\alpha\eta > 2(1 + \beta)` it grows. Both functions warn, with
the numbers, when E overstates what the setting reaches by this bound.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_gsm import _pool
from optax_gsm import _scores
from optax_gsm import _selection

# A decay that shrinks every weight by more than this per step (10 times
# SGD's usual lr 0.1 * wd 5e-4 / (1 - 0.9)) fights the loss gradient of the
# kept weights too: weight_decay_for warns.
MAX_SHRINK = 0.005

# e^-6 ~ 0.25%: a weight passive for the whole run keeps a quarter percent of
# its magnitude, the budget the Fashion-MNIST evidence runs use.
DEFAULT_EXPONENT = 6.0


def _is_real(x: Any) -> bool:
  if isinstance(x, (bool, np.bool_)):
    return False
  if isinstance(x, numbers.Real):
    return True
  return (isinstance(x, (np.ndarray, jax.Array)) and np.ndim(x) == 0
          and (jnp.issubdtype(x.dtype, jnp.floating)
               or jnp.issubdtype(x.dtype, jnp.integer)))


def _number(name: str, x: Any, low: float, high: float = math.inf) -> float:
  """``x`` as a float in ``[low, high)``; raises naming ``name`` otherwise."""
  if not _is_real(x):
    raise TypeError(f"{name} must be a real number, got {x!r}.")
  value = float(x)
  if not (math.isfinite(value) and low <= value < high):
    raise ValueError(f"{name} must be finite and lie in [{low:g}, {high:g}), "
                     f"got {x!r}.")
  return value


def _steps(steps: Any) -> int:
  if isinstance(steps, (bool, np.bool_)) or not isinstance(
      steps, numbers.Integral):
    raise TypeError(f"steps must be an int >= 1, got {steps!r}.")
  if steps < 1:
    raise ValueError(f"steps must be an int >= 1, got {steps!r}.")
  return int(steps)


def _learning_rates(learning_rate: Any, steps: int) -> np.ndarray:
  """The learning rate at updates 0, ..., steps - 1, as float64."""
  if _is_real(learning_rate):
    rates = np.full(steps, _number("learning_rate", learning_rate, 0.0))
  elif callable(learning_rate):
    try:  # optax schedules are jnp functions of the count: one program
      rates = jax.jit(jax.vmap(learning_rate))(jnp.arange(steps))
    except Exception:  # pylint: disable=broad-except
      # Python control flow or indexing on the count: call it step by step.
      rates = [learning_rate(k) for k in range(steps)]
    rates = np.asarray(rates, np.float64)
    if rates.shape != (steps,):
      raise ValueError("learning_rate: the schedule must return a scalar per "
                       f"step, got shape {rates.shape[1:]}.")
    bad = np.flatnonzero(~np.isfinite(rates) | (rates < 0))
    if bad.size:
      raise ValueError("learning_rate: the schedule must be finite and >= 0, "
                       f"got {rates[bad[0]]!r} at step {bad[0]}.")
  else:
    raise TypeError("learning_rate must be a number >= 0 or an optax "
                    f"schedule (a callable of the step), got {learning_rate!r}.")
  return rates


def _momentum(momentum: Any, decoupled: bool) -> float:
  """The coupled decay needs ``momentum``; the decoupled one ignores it."""
  if not isinstance(decoupled, (bool, np.bool_)):
    raise TypeError(f"decoupled must be a bool, got {decoupled!r}.")
  if decoupled:
    if momentum is not None:
      raise ValueError("momentum: a decoupled decay (AdamW) does not go "
                       "through the momentum; leave momentum=None.")
    return 0.0
  if momentum is None:
    raise TypeError("momentum is required for the coupled decay of "
                    "gsm_sgd; pass decoupled=True for AdamW.")
  return _number("momentum", momentum, 0.0, 1.0)


def _reached(rates: np.ndarray, weight_decay: float, momentum: float) -> float:
  r"""The exponent heavy-ball momentum really reaches: :math:`\sum_k
  -\ln|\lambda_k|` for the slower root :math:`\lambda_k` of each step."""
  x = rates * weight_decay
  b = 1 + momentum - x
  disc = (1 - momentum) ** 2 - 2 * x * (1 + momentum) + x * x  # b^2 - 4 beta
  root = np.sqrt(np.maximum(disc, 0.0))
  with np.errstate(divide="ignore", invalid="ignore"):
    # Real roots, b >= 0: 1 - lambda_slow = x / (1 - lambda_fast), no
    # cancellation; b < 0: both roots negative; complex: |lambda| = sqrt(beta).
    slow = -np.log1p(-x / (1 - (b - root) / 2))
    negative = -np.log((-b + root) / 2)
    rate = np.where(disc < 0, -0.5 * np.log(momentum) if momentum else 0.0,
                    np.where(b >= 0, slow, negative))
  return float(np.sum(rate))


def _warn_if_short(where: str, exponent: float, reached: float,
                   rates: np.ndarray, weight_decay: float,
                   momentum: float) -> None:
  if reached >= exponent * (1 - 1e-9):
    return
  shrink = float(np.max(rates)) * weight_decay / (1 - momentum)
  limit = (f"with momentum {momentum:g} a passive weight shrinks by at most "
           f"-ln(momentum) / 2 = {-0.5 * math.log(momentum):.4g} per step"
           if momentum else "without momentum a passive weight flips sign "
           "once lr * wd > 1")
  warnings.warn(
      f"{where}: exponent {exponent:.4g} needs a per-step shrink "
      f"lr * wd / (1 - momentum) up to {shrink:.4g}, but {limit} (beyond "
      "that it oscillates, and it grows once lr * wd > 2 * (1 + momentum)); "
      f"this setting reaches only about exp({-reached:.4g}). Train for more "
      "steps or lower the momentum.", stacklevel=3)


def passive_decay_exponent(
    learning_rate: optax.ScalarOrSchedule,
    steps: int,
    *,
    weight_decay: float,
    momentum: float | None = None,
    decoupled: bool = False,
) -> float:
  r"""The passive decay exponent :math:`E = \eta \sum_k \alpha_k / (1 - \beta)`.

  A weight that stays passive for ``steps`` updates of
  :func:`optax_gsm.gsm_sgd` shrinks by about :math:`e^{-E}`. Warns when
  momentum's speed limit (see the module docstring) makes the real decay
  smaller than :math:`e^{-E}`.

  Args:
    learning_rate: :math:`\alpha`, a number >= 0 or an optax schedule,
      evaluated at updates ``0, ..., steps - 1``.
    steps: the number of updates, an int >= 1.
    weight_decay: :math:`\eta >= 0`.
    momentum: :math:`\beta` in [0, 1); required unless ``decoupled``.
    decoupled: ``True`` for a decay outside the momentum (``optax.adamw``):
      :math:`E = \eta \sum_k \alpha_k`.

  Returns:
    E as a Python float.

  Example:
    >>> import optax, optax_gsm
    >>> round(optax_gsm.passive_decay_exponent(1e-2, 6000, momentum=0.99,
    ...                                        weight_decay=1e-3), 4)
    6.0
    >>> lr = optax.linear_schedule(1e-2, 0.0, 1000)
    >>> round(optax_gsm.passive_decay_exponent(lr, 1000, momentum=0.9,
    ...                                        weight_decay=1e-2), 4)
    0.5005
  """
  steps = _steps(steps)
  momentum = _momentum(momentum, decoupled)
  weight_decay = _number("weight_decay", weight_decay, 0.0)
  rates = _learning_rates(learning_rate, steps)
  exponent = math.fsum(rates) * weight_decay / (1 - momentum)
  _warn_if_short("passive_decay_exponent", exponent,
                 _reached(rates, weight_decay, momentum), rates, weight_decay,
                 momentum)
  return exponent


def weight_decay_for(
    learning_rate: optax.ScalarOrSchedule,
    steps: int,
    *,
    momentum: float | None = None,
    exponent: float = DEFAULT_EXPONENT,
    decoupled: bool = False,
) -> float:
  r"""The weight decay whose passive decay exponent is ``exponent``.

  .. math::
    \eta = E (1 - \beta) / \textstyle\sum_k \alpha_k

  The default E = 6 leaves a weight that is passive for the whole run at
  :math:`e^{-6} \approx 0.25\%` of its magnitude, so the hard prune at the
  end removes almost nothing. Warns (with the numbers) when the setting
  cannot reach E: the schedule sums to 0, or the decay needs a per-step
  shrink beyond what momentum allows (module docstring); and when the decay
  is so strong that it would shrink every weight, kept ones too, by more
  than 0.5% per step (a short run: 600 steps of AdamW, 300 of SGD), which
  can wreck training: then train longer, or keep a usual decay and use
  :func:`optax_gsm.hard_prune_at`.

  Args:
    learning_rate: :math:`\alpha`, a number >= 0 or an optax schedule.
    steps: the number of GSM updates, an int >= 1.
    momentum: :math:`\beta` in [0, 1); required unless ``decoupled``.
    exponent: the target E > 0.
    decoupled: ``True`` for AdamW's decay: :math:`\eta = E / \sum_k
      \alpha_k` (``optax.adamw(lr, weight_decay=eta)``).

  Returns:
    :math:`\eta` as a Python float; ``inf`` (with a warning) when the
    learning rates sum to 0.

  Example:
    >>> import optax_gsm
    >>> round(optax_gsm.weight_decay_for(1e-2, 6000, momentum=0.99), 6)
    0.001
    >>> round(optax_gsm.weight_decay_for(1e-3, 6000, decoupled=True), 6)
    1.0
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...   warnings.simplefilter("always")
    ...   eta = optax_gsm.weight_decay_for(1e-2, 600, momentum=0.99)
    >>> print(str(caught[0].message)[:60])
    weight_decay_for: exponent 6 needs a per-step shrink lr * wd
  """
  steps = _steps(steps)
  momentum = _momentum(momentum, decoupled)
  exponent = _number("exponent", exponent, 0.0)
  if exponent == 0:
    raise ValueError("exponent must be > 0, got 0.")
  rates = _learning_rates(learning_rate, steps)
  total = math.fsum(rates)
  if total == 0:
    warnings.warn(
        f"weight_decay_for: the learning rate sums to 0 over {steps} steps, "
        f"so no weight decay reaches exponent {exponent:g}; returning inf.",
        stacklevel=2)
    return math.inf
  weight_decay = exponent * (1 - momentum) / total
  _warn_if_short("weight_decay_for", exponent,
                 _reached(rates, weight_decay, momentum), rates, weight_decay,
                 momentum)
  _warn_if_strong(exponent, steps, rates, weight_decay, momentum, decoupled)
  return weight_decay


def _warn_if_strong(exponent: float, steps: int, rates: np.ndarray,
                    weight_decay: float, momentum: float,
                    decoupled: bool) -> None:
  """Warns when the decay shrinks every weight by more than
  ``MAX_SHRINK`` per step: kept weights then live on the loss gradient's
  fight against it, and a short run does not train."""
  shrink = float(np.max(rates)) * weight_decay / (1 - momentum)
  if shrink <= MAX_SHRINK:
    return
  steps_needed = math.ceil(steps * shrink / MAX_SHRINK)
  if decoupled:
    what = (f"AdamW moves an entry by about lr per step, so the decay holds "
            f"no weight above about 1 / wd = {1 / weight_decay:.3g}")
    usual = "AdamW's usual 1e-4"
  else:
    what = ("a kept weight needs a loss gradient of at least wd * |w| = "
            f"{weight_decay:.3g} |w| to hold its size")
    usual = "the usual 5e-4"
  warnings.warn(
      f"weight_decay_for: wd = {weight_decay:.4g} reaches exponent "
      f"{exponent:g} in {steps} steps only by shrinking every weight, kept "
      f"ones too, by up to {100 * shrink:.3g}% per step (lr * wd"
      f"{'' if decoupled else ' / (1 - momentum)'}; more than "
      f"{100 * MAX_SHRINK:g}% per step); {what}. Such a decay can wreck "
      f"training. Train for at least {steps_needed} steps with this schedule's shape, "
      f"or keep {usual} and prune inside training with "
      "optax_gsm.hard_prune_at (gsm_sgd(prune_step=...)), which needs no "
      "passive decay.", stacklevel=3)


def prune_share(
    params: Any,
    compression: Any = None,
    *,
    density: Any = None,
    sparsity: Any = None,
    prunable: _pool.Prunable = None,
) -> jax.Array:
  r"""The share of the pool's squared norm that a hard prune would remove now.

  .. math::
    \frac{\sum_{i \notin \mathrm{top}_Q |w|} w_i^2}{\sum_i w_i^2}

  over the pooled entries, with the same global magnitude top-Q as
  :func:`optax_gsm.prune`. Near 0 the prune is lossless; it falls as GSM's
  passive weights decay. One selection pass: cheap enough for every few
  steps, and jit-able (the ratio may be traced).

  Args:
    params: the parameters.
    compression: C >= 1. Give this or ``density``.
    density: d in (0, 1].
    sparsity: or s in [0, 1), removed over total entries (d = 1 - s).
    prunable: the pool, as in :func:`optax_gsm.gsm`.

  Returns:
    A float32 (or wider) scalar array in [0, 1]; 0 for an all-zero pool.

  Example:
    >>> import jax.numpy as jnp, optax_gsm
    >>> params = {"w": jnp.array([[3.0, 0.0], [1.0, 0.0]])}
    >>> round(float(optax_gsm.prune_share(params, compression=4)), 4)
    0.1
  """
  compression, density = _pool.canonical_ratio(compression, density, sparsity,
                                               "prune_share")
  _pool.validate_ratio(compression, density)
  flags = _pool.pooled_flags(prunable, params, "prune_share")
  pooled = [w for w, f in zip(jax.tree.leaves(params), flags) if f]
  kept = _pool.num_kept(sum(math.prod(jnp.shape(w)) for w in pooled),
                        compression, density, "prune_share")
  return _removed_share(pooled, jnp.asarray(kept, jnp.uint32))


@jax.jit
def _removed_share(pooled: list[jax.Array], kept: jax.Array) -> jax.Array:
  """Compiled once per pool layout: Q is an argument, not a constant."""
  magnitudes = _scores.magnitude_score(None, pooled)
  masks = _selection.top_k_masks(magnitudes, kept)
  total = sum(jnp.sum(jnp.square(m)) for m in magnitudes)
  removed = sum(jnp.sum(jnp.where(k, 0, jnp.square(m)))
                for m, k in zip(magnitudes, masks))
  return jnp.where(total > 0, removed / jnp.where(total > 0, total, 1), 0.0)
