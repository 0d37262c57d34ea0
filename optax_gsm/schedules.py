"""Density schedules for GSM: ramp the kept fraction from dense to a target.

The paper keeps Q fixed. To ramp it, inject the density into
:func:`optax_gsm.gsm_sgd` (or :func:`optax_gsm.gsm`) as a hyperparameter:

  >>> import optax, optax_gsm
  >>> opt = optax.inject_hyperparams(optax_gsm.gsm_sgd)(
  ...     learning_rate=0.01,
  ...     density=optax_gsm.density_schedule(0.1, 0, 1000, power=3))

The density is then a traced array, so the step function compiles once and
Q follows the schedule step by step. Here are the polynomial ramp of Zhu &
Gupta (2017) (:func:`polynomial_density_schedule`, which :func:`optax_gsm.gmp`
and :func:`optax_gsm.weightmom` follow), its every-step shorthand and a range
check for any schedule. All return float32 densities (float64 with x64):
``optax.inject_hyperparams`` casts Python floats and weakly typed arrays to
the params' dtype, but not these.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_gsm import _pool


_INT32_MAX = 2**31 - 1


def _check_density(name: str, value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f"{name} must be a number in (0, 1], got {value!r}.")
  if not 0 < value <= 1:
    raise ValueError(f"{name} must lie in (0, 1], got {value!r}.")
  return float(value)


def _strong(density: Any) -> jax.Array:
  """A float32 (float64 with x64) array, which ``inject_hyperparams`` keeps.

  It casts Python floats and weakly typed arrays to the params' dtype, and a
  bfloat16 density would put Q up to N d / 2**8 entries off.
  """
  return jnp.asarray(density, jnp.result_type(float))


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
  steps at which :func:`optax_gsm.gmp` recomputes its masks. Built on
  ``optax.polynomial_schedule``.

  Args:
    final_density: :math:`d_f` in (0, 1], kept over total entries at the end.
    begin_step: :math:`t_0 \ge 0`, the first pruning step.
    end_step: :math:`t_1 > t_0`, the step that reaches ``final_density``.
    initial_density: :math:`d_i`, in [``final_density``, 1].
    update_every: :math:`\Delta \ge 1`.
    power: :math:`p > 0`.

  Returns:
    An ``optax.Schedule``: step count to density, a float32 array (float64
    with x64), which ``optax.inject_hyperparams`` passes on uncast.

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
  begin_step = _pool.check_int("begin_step", begin_step, 0)
  end_step = _pool.check_int("end_step", end_step, begin_step + 1)
  if end_step > _INT32_MAX:  # also bounds begin_step
    raise ValueError(
        f"end_step must be <= 2**31 - 1, got {end_step}: optax counts steps "
        "in int32, so a later step never comes.")
  update_every = _pool.check_int("update_every", update_every, 1)
  if not power > 0:
    raise ValueError(f"power must be > 0, got {power!r}.")
  poly = optax.polynomial_schedule(
      init_value=initial_density, end_value=final_density, power=power,
      transition_steps=end_step - begin_step, transition_begin=begin_step)

  def schedule(count):
    count = jnp.asarray(count)
    since = jnp.maximum(count - begin_step, 0)
    step = begin_step + since // update_every * update_every
    return _strong(poly(jnp.where(count >= end_step, end_step, step)))

  return schedule


def density_schedule(
    final_density: float,
    begin_step: int,
    end_step: int,
    *,
    power: float = 3.0,
    initial_density: float = 1.0,
) -> optax.Schedule:
  r"""Density ramped from ``initial_density`` to ``final_density``.

  .. math::
    d_t = d_f + (d_i - d_f)\left(1 - \frac{t - t_0}{t_1 - t_0}\right)^p

  for :math:`t_0 \le t \le t_1`, :math:`d_i` before and :math:`d_f` after;
  ``power=1`` is linear, ``power=3`` the cubic ramp of Zhu & Gupta (2017).
  This is :func:`optax_gsm.polynomial_density_schedule` updated every step.

  Args:
    final_density: :math:`d_f` in (0, 1].
    begin_step: :math:`t_0 \ge 0`.
    end_step: :math:`t_1 > t_0`.
    power: :math:`p > 0`.
    initial_density: :math:`d_i` in [``final_density``, 1].

  Returns:
    An ``optax.Schedule`` from step count to density.

  Example:
    >>> import optax_gsm
    >>> sched = optax_gsm.density_schedule(0.2, 0, 10, power=1)
    >>> [round(float(sched(t)), 2) for t in (0, 5, 10, 20)]
    [1.0, 0.6, 0.2, 0.2]
  """
  return polynomial_density_schedule(
      final_density, begin_step, end_step, initial_density=initial_density,
      update_every=1, power=power)


def _bad_density(values: np.ndarray) -> np.ndarray:
  return ~((values > 0) & (values <= 1))  # NaN is bad too


def checked_density_schedule(
    schedule: optax.Schedule,
    num_steps: int,
    *,
    runtime_check: bool = False,
) -> optax.Schedule:
  """Checks that a density schedule stays in (0, 1] on steps 0..num_steps.

  The schedule is evaluated on every step ``0, 1, ..., num_steps`` when this
  function is called, so a bad value raises a ``ValueError`` here, before
  any training. This covers every step the schedule will see if training
  runs at most ``num_steps`` updates; later steps are not checked.

  Inside ``jit`` the density is traced and cannot raise a Python error. With
  ``runtime_check=True`` the returned schedule also passes each value to the
  host with ``jax.debug.callback``, which raises there; JAX then surfaces the
  failure as a ``JaxRuntimeError`` carrying this message, at the step that
  produced it, at the cost of one host callback per step. Without either
  check, an out-of-range traced density is clipped: Q = floor(N d) is clipped
  to [0, N] (a density <= 0 or NaN keeps nothing).

  Args:
    schedule: step count to density.
    num_steps: the last step to check, >= 0.
    runtime_check: also check every value at run time (see above).

  Returns:
    ``schedule`` returning float32 arrays (float64 with x64), which
    ``optax.inject_hyperparams`` does not cast to the params' dtype, and with
    ``runtime_check`` checking each value it returns.

  Raises:
    ValueError: naming the first step whose density lies outside (0, 1].

  Example:
    >>> import optax, optax_gsm
    >>> bad = optax.linear_schedule(1.0, -0.5, 10)
    >>> optax_gsm.checked_density_schedule(bad, 10)
    Traceback (most recent call last):
      ...
    ValueError: schedule gives density -0.05 at step 7, outside (0, 1].
  """
  if not callable(schedule):
    raise TypeError(
        f"schedule must be callable, got {type(schedule).__name__}.")
  num_steps = _pool.check_int("num_steps", num_steps, 0)
  steps = jnp.arange(num_steps + 1)
  values = np.asarray(jax.vmap(schedule)(steps), np.float64)
  if values.shape != steps.shape:
    raise ValueError("schedule must return one scalar density per step; got "
                     f"shape {values.shape[1:]} per step.")
  bad = np.flatnonzero(_bad_density(values))
  if bad.size:
    step = int(bad[0])
    raise ValueError(f"schedule gives density {values[step]:.4g} at step "
                     f"{step}, outside (0, 1].")
  if not runtime_check:
    return lambda count: _strong(schedule(count))

  def host_check(step, value):
    if _bad_density(np.asarray(value)):
      raise ValueError(f"schedule gives density {float(value):.4g} at step "
                       f"{int(step)}, outside (0, 1].")

  def checked(count: Any) -> jax.Array:
    value = schedule(count)
    jax.debug.callback(host_check, count, value)
    return _strong(value)

  return checked
