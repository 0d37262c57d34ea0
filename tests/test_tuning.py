"""passive_decay_exponent, weight_decay_for, prune_share and gsm_metrics."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

import optax_gsm
from examples.common import models


def passive_decay(rates, weight_decay, momentum, z0=0.0):
  """-ln|w| after z <- beta z + eta w, w <- w - alpha z from w = 1."""
  w, z, out = 1.0, z0, []
  for lr in rates:
    z = momentum * z + weight_decay * w
    w = w - lr * z
    out.append(-math.log(abs(w)))
  return np.array(out)


@pytest.fixture(autouse=True)
def warnings_are_errors():
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    yield


def test_exponent_of_a_number_and_of_schedules():
  e = optax_gsm.passive_decay_exponent(0.01, 500, momentum=0.9,
                                       weight_decay=0.06)
  assert e == pytest.approx(0.01 * 500 * 0.06 / 0.1, rel=1e-12)
  schedule = optax.cosine_decay_schedule(0.1, 300)
  total = sum(float(schedule(k)) for k in range(300))
  assert optax_gsm.passive_decay_exponent(
      schedule, 300, momentum=0.5, weight_decay=0.01) == pytest.approx(
          total * 0.01 / 0.5, rel=1e-6)
  python_flow = lambda k: 0.1 if k < 5 else 0.01  # not traceable: a loop
  assert optax_gsm.passive_decay_exponent(
      python_flow, 10, momentum=0.0, weight_decay=1.0) == pytest.approx(0.55)


@pytest.mark.parametrize("lr,steps,momentum", [
    (0.01, 500, 0.9), (optax.linear_schedule(0.02, 0.0, 2000), 2000, 0.99),
    (0.05, 200, 0.0)])
def test_weight_decay_for_reaches_the_exponent(lr, steps, momentum):
  warnings.filterwarnings("ignore", message="weight_decay_for: wd =")  # short runs
  eta = optax_gsm.weight_decay_for(lr, steps, momentum=momentum, exponent=3)
  assert optax_gsm.passive_decay_exponent(
      lr, steps, momentum=momentum, weight_decay=eta) == pytest.approx(3)
  rates = [lr(k) if callable(lr) else lr for k in range(steps)]
  # The small-step formula is a slight underestimate near critical damping.
  assert 0.95 * 3 <= passive_decay(rates, eta, momentum)[-1] <= 1.2 * 3


def test_default_target_is_e_to_the_minus_6():
  assert optax_gsm.weight_decay_for(1e-2, 6000, momentum=0.99) == (
      pytest.approx(6 * 0.01 / 60))


def test_warns_when_momentum_caps_the_decay():
  warnings.filterwarnings("ignore", message="weight_decay_for: wd =")  # short runs
  with pytest.warns(UserWarning, match=r"exponent 300 .* 0\.05268 per step"
                    r".*exp\(-5\.268\)") as caught:
    optax_gsm.passive_decay_exponent(0.1, 100, momentum=0.9, weight_decay=3)
  assert len(caught) == 1
  # True: the weight oscillates within an envelope of about e^-5.3, not e^-300.
  decay = passive_decay([0.1] * 100, 3.0, 0.9)
  assert 4 < decay[-12:].min() < 7
  with pytest.warns(UserWarning, match="weight_decay_for: exponent 6 "):
    optax_gsm.weight_decay_for(1e-2, 600, momentum=0.99)


def test_schedule_summing_to_zero_warns_and_gives_inf():
  with pytest.warns(UserWarning, match="sums to 0 over 10 steps"):
    assert optax_gsm.weight_decay_for(optax.constant_schedule(0.0), 10,
                                      momentum=0.9) == math.inf


@pytest.mark.parametrize("kwargs,error,name", [
    (dict(steps=0), ValueError, "steps"),
    (dict(steps=10.0), TypeError, "steps"),
    (dict(steps=True), TypeError, "steps"),
    (dict(momentum=1.0), ValueError, "momentum"),
    (dict(momentum=-0.1), ValueError, "momentum"),
    (dict(momentum=True), TypeError, "momentum"),
    (dict(momentum=float("nan")), ValueError, "momentum"),
    (dict(learning_rate=-0.1), ValueError, "learning_rate"),
    (dict(learning_rate=True), TypeError, "learning_rate"),
    (dict(learning_rate="0.1"), TypeError, "learning_rate"),
    (dict(learning_rate=lambda k: -0.1 * jnp.ones(())), ValueError,
     "learning_rate"),
    (dict(learning_rate=lambda k: jnp.ones(2)), ValueError, "learning_rate"),
    (dict(weight_decay=-1e-4), ValueError, "weight_decay"),
    (dict(weight_decay=float("inf")), ValueError, "weight_decay"),
    (dict(exponent=0), ValueError, "exponent"),
    (dict(exponent=-1.0), ValueError, "exponent"),
])
def test_bad_input_names_the_argument(kwargs, error, name):
  args = dict(learning_rate=0.01, steps=100, momentum=0.9)
  args.update(kwargs)
  if "exponent" in args:
    fn = optax_gsm.weight_decay_for
  else:
    fn = optax_gsm.passive_decay_exponent
    args.setdefault("weight_decay", 1e-3)
  lr, steps = args.pop("learning_rate"), args.pop("steps")
  with pytest.raises(error, match=name):
    fn(lr, steps, **args)


def test_numpy_and_jax_scalars_are_numbers():
  e = optax_gsm.passive_decay_exponent(np.float32(0.5), np.int64(4),
                                       momentum=jnp.float32(0.5),
                                       weight_decay=np.float64(0.25))
  assert e == pytest.approx(1.0)


PARAMS = {"a": jnp.array([[3.0, -1.0], [0.5, 0.0]]),
          "b": jnp.array([[2.0, 0.25]]), "bias": jnp.ones(2)}


def test_prune_share_is_the_squared_norm_a_prune_removes():
  pruned, _ = jax.jit(lambda p: optax_gsm.prune(p, compression=2))(PARAMS)
  pool = lambda p: sum(float(jnp.sum(p[k] ** 2)) for k in ("a", "b"))
  want = 1 - pool(pruned) / pool(PARAMS)
  share = optax_gsm.prune_share(PARAMS, compression=2)
  assert float(share) == pytest.approx(want, rel=1e-6)
  assert float(optax_gsm.prune_share(pruned, compression=2)) == 0.0
  assert float(optax_gsm.prune_share(jax.tree.map(jnp.zeros_like, PARAMS),
                                     density=0.5)) == 0.0


def test_prune_share_under_jit_with_a_traced_density():
  fn = jax.jit(lambda p, d: optax_gsm.prune_share(p, density=d))
  for d in (0.5, 0.25):
    assert float(fn(PARAMS, jnp.float32(d))) == pytest.approx(
        float(optax_gsm.prune_share(PARAMS, density=d)))
  with pytest.raises(ValueError, match="0"):
    optax_gsm.prune_share(PARAMS, compression=100)


def mlp_and_params():
  model = models.MLP((6, 3))
  return model, model.init(jax.random.key(0), jnp.ones((1, 4)))


def gsm_step(opt, params):
  grads = jax.tree.map(jnp.ones_like, params)
  _, state = jax.jit(opt.update)(grads, opt.init(params), params)
  return state


def test_gsm_metrics_in_a_chain_with_linen_params():
  _, params = mlp_and_params()  # pool: 4*6 + 6*3 = 42
  state = gsm_step(optax.chain(optax.clip(1.0), optax_gsm.gsm(density=0.25),
                               optax.sgd(0.1)), params)
  m = optax_gsm.gsm_metrics(state, params, density=0.25)
  assert m["gsm/step"] == 1 and m["gsm/active"] == 10 and m["gsm/pool"] == 42
  assert m["gsm/density"] == pytest.approx(10 / 42)
  a, b = m["gsm/density/Dense_0/kernel"], m["gsm/density/Dense_1/kernel"]
  assert a * 24 + b * 18 == pytest.approx(10)
  assert 0 <= m["gsm/prune_share"] < 1
  assert all(type(v) in (int, float) for v in m.values())
  counts = optax_gsm.gsm_metrics(state)
  assert set(counts) == {"gsm/step", "gsm/active", "gsm/active/Dense_0/kernel",
                         "gsm/active/Dense_1/kernel"}


def test_gsm_metrics_through_inject_hyperparams_and_train_state():
  model, params = mlp_and_params()
  opt = optax.inject_hyperparams(optax_gsm.gsm_sgd)(learning_rate=0.1,
                                                    compression=4.0)
  state = gsm_step(opt, params)
  assert optax_gsm.gsm_metrics(state)["gsm/active"] == 42 // 4
  ts = train_state.TrainState.create(apply_fn=model.apply, params=params,
                                     tx=opt).replace(opt_state=state)
  m = optax_gsm.gsm_metrics(ts, ts.params, compression=4)
  assert m["gsm/active"] == 10 and "gsm/prune_share" in m


def test_gsm_metrics_bad_input():
  _, params = mlp_and_params()
  with pytest.raises(ValueError, match="no GSMState"):
    optax_gsm.gsm_metrics(optax.sgd(0.1).init(params))
  state = gsm_step(optax_gsm.gsm(compression=4), params)
  with pytest.raises(ValueError, match="needs params"):
    optax_gsm.gsm_metrics(state, compression=4)
  with pytest.raises(ValueError, match="lack the pooled leaves"):
    optax_gsm.gsm_metrics(state, {"other": jnp.ones((4, 4))})


def test_decoupled_decay_matches_a_simulated_adamw_passive_weight():
  """optax.adamw on a weight whose gradient gsm masks to 0 from the start:
  it shrinks by exp(-E) with E = wd * sum(lr), momentum playing no part."""
  warnings.filterwarnings("ignore", message="weight_decay_for: wd =")  # short runs
  lr = optax.linear_schedule(1e-2, 1e-3, 400)
  eta = optax_gsm.weight_decay_for(lr, 400, exponent=2.0, decoupled=True)
  assert optax_gsm.passive_decay_exponent(
      lr, 400, weight_decay=eta, decoupled=True) == pytest.approx(2.0)
  opt = optax.adamw(lr, weight_decay=eta)
  w = {"w": jnp.ones(3)}
  state = opt.init(w)
  for _ in range(400):
    updates, state = opt.update({"w": jnp.zeros(3)}, state, w)
    w = optax.apply_updates(w, updates)
  assert float(-jnp.log(w["w"][0])) == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(decoupled=True, momentum=0.9), ValueError, "momentum"),
    (dict(decoupled=1), TypeError, "decoupled"),
    (dict(), TypeError, "momentum"),
])
def test_decoupled_bad_input(kwargs, error, match):
  with pytest.raises(error, match=match):
    optax_gsm.weight_decay_for(0.01, 100, **kwargs)


def test_a_python_schedule_that_indexes_by_the_count_works():
  table = {k: 1e-2 if k < 50 else 1e-3 for k in range(100)}
  e = optax_gsm.passive_decay_exponent(lambda k: table[int(k)], 100,
                                       momentum=0.9, weight_decay=0.1)
  assert e == pytest.approx((50 * 1e-2 + 50 * 1e-3) * 0.1 / 0.1)
