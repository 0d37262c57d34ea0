"""Tests of density schedules injected into GSM."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_gsm


@pytest.mark.parametrize("power", [1, 3])
def test_density_schedule_matches_formula(power):
  sched = optax_gsm.density_schedule(0.1, 10, 50, power=power,
                                     initial_density=0.9)
  for t in (0, 10, 17, 30, 49, 50, 80):
    frac = min(max((t - 10) / 40, 0.0), 1.0)
    want = 0.1 + (0.9 - 0.1) * (1 - frac) ** power
    np.testing.assert_allclose(float(sched(t)), want, rtol=1e-6)


def test_injected_schedule_moves_q_every_step_with_one_compile():
  rng = np.random.default_rng(0)
  params = {"a": {"kernel": jnp.asarray(rng.normal(size=(13, 7)), jnp.float32),
                  "bias": jnp.zeros(7)},
            "b": {"kernel": jnp.asarray(rng.normal(size=(7, 5)), jnp.float32)}}
  pool = 13 * 7 + 7 * 5
  sched = optax_gsm.density_schedule(0.05, 2, 12, power=3)
  opt = optax.inject_hyperparams(optax_gsm.gsm_sgd)(
      learning_rate=0.01, density=sched)
  traces = []

  @jax.jit
  def step(params, state, x):
    traces.append(None)  # runs once per compilation
    loss = lambda p: jnp.sum(jnp.tanh(x @ p["a"]["kernel"] + p["a"]["bias"])
                             @ p["b"]["kernel"])
    updates, state = opt.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  state = opt.init(params)
  actives = []
  for t in range(15):
    x = jnp.asarray(rng.normal(size=(4, 13)), jnp.float32)
    params, state = step(params, state, x)
    used = np.float32(state.hyperparams["density"])
    np.testing.assert_allclose(used, sched(t), rtol=1e-6)
    active = sum(int(a) for a in jax.tree.leaves(state.inner_state[0].active))
    assert active == int(np.floor(np.float32(pool) * used)), t
    actives.append(active)
  assert len(traces) == 1
  assert actives[0] == pool and actives[-1] == int(np.floor(pool * 0.05))
  assert len(set(actives)) > 5  # Q really moved


def test_checked_schedule_rejects_out_of_range():
  good = optax_gsm.density_schedule(0.1, 0, 10)
  checked = optax_gsm.checked_density_schedule(good, 100)
  assert float(checked(5)) == float(good(5))
  for bad, step in ((optax.linear_schedule(1.0, -1.0, 10), 5),
                    (optax.constant_schedule(1.5), 0),
                    (lambda t: jnp.where(t < 3, 0.5, jnp.nan), 3)):
    with pytest.raises(ValueError, match=f"at step {step}, outside"):
      optax_gsm.checked_density_schedule(bad, 20)
  with pytest.raises(TypeError, match="num_steps"):
    optax_gsm.checked_density_schedule(good, 2.5)


def test_runtime_check_raises_inside_jit():
  late_bad = lambda t: jnp.where(t < 5, 0.5, 0.0)
  sched = optax_gsm.checked_density_schedule(late_bad, 4, runtime_check=True)
  f = jax.jit(lambda t: sched(t) * 2)
  assert float(f(4)) == 1.0
  with pytest.raises(Exception, match="density 0 at step 7"):
    f(7).block_until_ready()
    jax.effects_barrier()


def test_checked_schedule_takes_numpy_ints_and_returns_uncast_float32():
  # density_schedule takes NumPy ints; checked_density_schedule now does too.
  sched = optax_gsm.checked_density_schedule(
      optax.linear_schedule(1.0, 0.5, 10), np.int64(100))
  value = sched(5)
  assert float(value) == pytest.approx(0.75)
  assert value.dtype == jnp.float32 and not value.weak_type
  for bad in (True, 2.5):
    with pytest.raises(TypeError, match="num_steps must be an int"):
      optax_gsm.checked_density_schedule(sched, bad)
  with pytest.raises(TypeError, match="final_density must be a number"):
    optax_gsm.density_schedule(True, 0, 10)
