"""optax conformance of gsm_sgd, in the spirit of optax's contrib common tests."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import optax_gsm


def _params(dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(0), 3)
  return {
      "w": jax.random.normal(keys[0], (10, 30), dtype),
      "v": jax.random.normal(keys[1], (7, 3), dtype),
      "b": jax.random.normal(keys[2], (3,), dtype),
  }


def _grads(params, seed):
  keys = jax.random.split(jax.random.key(seed), len(jax.tree.leaves(params)))
  keys = jax.tree.unflatten(jax.tree.structure(params), list(keys))
  return jax.tree.map(lambda k, x: jax.random.normal(k, x.shape, x.dtype),
                      keys, params)


def _active(gsm_state):
  return sum(int(a) for a in jax.tree.leaves(gsm_state.active))


def test_extra_args_accepted_and_no_recompile_on_second_call():
  opt = optax_gsm.gsm_sgd(0.1, compression=4)
  params = _params()
  traces = []

  @jax.jit
  def step(params, state, grads):
    traces.append(None)
    return opt.update(grads, state, params, value=jnp.ones(()), unexpected=1)

  state = opt.init(params)
  _, state = step(params, state, _grads(params, 1))
  updates, state = step(params, state, _grads(params, 2))
  assert len(traces) == 1
  plain, _ = jax.eval_shape(opt.update, _grads(params, 2), opt.init(params),
                            params)
  assert jax.tree.map(jax.typeof, updates) == jax.tree.map(jax.typeof, plain)


def test_map_params_maps_the_param_trees_of_the_state():
  opt = optax_gsm.gsm_sgd(0.1, compression=4)
  params = _params()
  state = opt.init(params)
  _, state = jax.jit(opt.update)(_grads(params, 1), state, params)
  same = optax.tree.map_params(opt, lambda v: v, state)
  jax.tree.map(np.testing.assert_array_equal, same, state)
  # Param-shaped trees (the momentum) are mapped; the per-leaf active counts
  # are not params, so they go to transform_non_params.
  shapes = optax.tree.map_params(opt, jnp.shape, state,
                                 transform_non_params=lambda _: "other")
  assert shapes[2].trace == {"w": (10, 30), "v": (7, 3), "b": (3,)}
  assert shapes[0] == optax_gsm.GSMState(count="other", active="other")


@pytest.mark.parametrize("make", [
    lambda: optax_gsm.gmp(0.25, 0, 4, 1),
    lambda: optax_gsm.weightmom(0.25, 0, 4, 1, window=2, min_below=1),
    lambda: optax_gsm.structured_gsm(density=0.5),
])
def test_map_params_works_for_the_other_pruners(make):
  opt = optax.chain(make(), optax.trace(0.9))
  params = _params()
  state = opt.init(params)
  shapes = optax.tree.map_params(opt, jnp.shape, state,
                                 transform_non_params=lambda _: "other")
  assert shapes[1].trace == {"w": (10, 30), "v": (7, 3), "b": (3,)}
  assert all(v == "other" for v in shapes[0])


def _least_squares():
  """A linear regression whose true weights keep 32 of 128 entries."""
  k_x, k_support, k_value, k_init = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(k_x, (256, 16))
  support = jax.random.permutation(k_support, 16 * 8)[:32]
  values = jax.random.normal(k_value, (32,))
  w_true = jnp.zeros(16 * 8).at[support].set(values + 2 * jnp.sign(values))
  y = x @ w_true.reshape(16, 8)

  def loss(p):
    return 0.5 * jnp.mean(jnp.sum((x @ p["w"] + p["b"] - y) ** 2, -1))

  params = {"w": 0.1 * jax.random.normal(k_init, (16, 8)), "b": jnp.zeros(8)}
  return loss, params, support


def test_converges_to_the_sparse_optimum_under_scan():
  loss, params, support = _least_squares()
  opt = optax_gsm.gsm_sgd(0.05, compression=4, momentum=0.9,
                          weight_decay=1e-3)

  def step(carry, _):
    p, s = carry
    value, g = jax.value_and_grad(loss)(p)
    u, s = opt.update(g, s, p)
    return (optax.apply_updates(p, u), s), value

  run = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), length=1500))
  (params, state), losses = run(params)
  pruned, masks = optax_gsm.prune(params, compression=4)
  assert float(losses[-1]) < 1e-4 * float(losses[0])
  assert float(loss(pruned)) < 1e-4 * float(losses[0])
  # The 32 kept weights are exactly the true support.
  assert bool(jnp.all(masks["w"].ravel()[support]))
  assert int(state[0].active["w"]) == 32


@pytest.mark.parametrize("ratio, kept", [({"compression": 3.0}, 107),
                                         ({"density": 0.3}, 96)])
def test_inject_hyperparams_gives_the_same_step(ratio, kept):
  params = _params()
  grads = _grads(params, 1)
  plain = optax_gsm.gsm_sgd(0.1, **ratio)
  injected = optax.inject_hyperparams(optax_gsm.gsm_sgd)(
      learning_rate=0.1, **ratio)
  updates, state = jax.jit(plain.update)(grads, plain.init(params), params)
  updates_i, state_i = jax.jit(injected.update)(
      grads, jax.jit(injected.init)(params), params)
  jax.tree.map(np.testing.assert_array_equal, updates_i, updates)
  jax.tree.map(np.testing.assert_array_equal, state_i.inner_state, state)
  assert _active(state[0]) == kept  # of 321 pooled entries


def test_density_schedule_changes_every_step_without_recompiling():
  params = _params()
  pool_size = 10 * 30 + 7 * 3
  schedule = optax.linear_schedule(1.0, 0.05, transition_steps=12)
  opt = optax.inject_hyperparams(optax_gsm.gsm_sgd)(
      learning_rate=optax.constant_schedule(0.01), density=schedule)
  traces = []

  @jax.jit
  def step(params, state, grads):
    traces.append(None)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = opt.init(params)
  seen = set()
  for t in range(14):
    params, state = step(params, state, _grads(params, t))
    density = float(state.hyperparams["density"])  # the one this step used
    assert density == pytest.approx(float(schedule(t)), rel=1e-6)
    expected = math.floor(pool_size * density)
    assert _active(state.inner_state[0]) == expected, t
    seen.add(expected)
  assert len(traces) == 1
  assert len(seen) == 13  # a new Q every step until the schedule ends


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_param_dtype_is_preserved(dtype):
  opt = optax_gsm.gsm_sgd(0.1, compression=4)
  params = _params(dtype)
  state = opt.init(params)
  step = jax.jit(opt.update)
  for seed in range(2):
    updates, state = step(_grads(params, seed), state, params)
    params = optax.apply_updates(params, updates)
  for tree in (updates, params, state[2].trace):
    assert {x.dtype for x in jax.tree.leaves(tree)} == {jnp.dtype(dtype)}
  assert _active(state[0]) == (10 * 30 + 7 * 3) // 4


def test_inside_multi_steps_equals_one_step_on_the_mean_gradient():
  params = _params()
  g1, g2 = _grads(params, 1), _grads(params, 2)
  opt = optax_gsm.gsm_sgd(0.1, compression=4)
  multi = optax.MultiSteps(opt, every_k_schedule=2)
  state = multi.init(params)
  step = jax.jit(multi.update)
  first, state = step(g1, state, params)
  second, state = step(g2, state, params)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
  expected, _ = jax.jit(opt.update)(mean, opt.init(params), params)
  assert all(not jnp.any(u) for u in jax.tree.leaves(first))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               second, expected)
  assert _active(state.inner_opt_state[0]) == (10 * 30 + 7 * 3) // 4


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_state_type_and_sharding_stable_across_cond(dtype):
  mesh = jax.make_mesh((jax.device_count(),), ("x",),
                       axis_types=(AxisType.Explicit,))
  sharding = NamedSharding(mesh, P(None, "x"))
  opt = optax_gsm.gsm_sgd(0.1, compression=4)
  with jax.set_mesh(mesh):
    params = {
        "w": jax.device_put(jnp.ones((3, 16, 4), dtype), sharding),
        "b": jnp.ones((4,), dtype),
    }
    params["w"] = params["w"] * jnp.arange(4, dtype=dtype)
    state = opt.init(params)

    @jax.jit
    def maybe_update(pred, state):
      return jax.lax.cond(pred, lambda s: opt.update(params, s, params)[1],
                          lambda s: s, state)

    after = jax.block_until_ready(maybe_update(True, state))
    kept = jax.block_until_ready(maybe_update(False, state))
  types = jax.tree.map(jax.typeof, state)
  assert jax.tree.map(jax.typeof, after) == types
  assert jax.tree.map(jax.typeof, kept) == types
  assert after[2].trace["w"].sharding.is_equivalent_to(sharding, 3)
  assert int(after[0].count) == 1 and int(after[0].active["w"]) == 48


def test_init_on_shape_dtype_structs():
  opt = optax_gsm.gsm_sgd(0.1, compression=4)
  params = _params(jnp.bfloat16)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          params)
  state = opt.init(abstract)
  concrete = opt.init(params)
  assert jax.tree.structure(state) == jax.tree.structure(concrete)
  assert (jax.tree.map(jax.typeof, state)
          == jax.tree.map(jax.typeof, concrete))
  assert (jax.eval_shape(opt.init, abstract)
          == jax.eval_shape(opt.init, params))


def test_inject_hyperparams_with_callable_prunable_as_static_arg():
  # A callable prunable is not a schedule: it goes in static_args.
  params = _params()
  prunable = lambda p: jax.tree.map(lambda x: x.shape == (10, 30), p)
  opt = optax.inject_hyperparams(optax_gsm.gsm_sgd, static_args="prunable")(
      learning_rate=0.1, compression=4.0, prunable=prunable)
  _, state = jax.jit(opt.update)(_grads(params, 1), opt.init(params), params)
  assert jax.tree.map(int, state.inner_state[0].active) == {
      "w": 75, "v": optax.MaskedNode(), "b": optax.MaskedNode()}
