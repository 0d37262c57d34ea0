"""Tests of gsm() and gsm_sgd() against brute-force NumPy references."""

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import numpy_reference as ref
import optax_gsm

DTYPES = [np.float32, ml_dtypes.bfloat16, np.float16]
SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], np.float32)


def random_tree(rng, dtype_cycle=DTYPES, special=True):
  """A mixed pytree: kernels of several shapes/dtypes, biases, ties, specials."""
  shapes = [(7, 5), (3, 3, 2, 4), (11, 2), (1, 1), (4, 6)]
  params, grads = {}, {}
  for i, shape in enumerate(shapes):
    dtype = dtype_cycle[i % len(dtype_cycle)]
    # Values on a coarse grid give many exactly tied scores.
    w = rng.integers(-3, 4, shape).astype(np.float32) / 2
    g = rng.integers(-3, 4, shape).astype(np.float32) / 4
    if special and i == 1:
      w.ravel()[:5] = SPECIAL
      g.ravel()[5:10] = SPECIAL[::-1]
    params[f"layer{i}"] = {"kernel": jnp.asarray(w, dtype),
                           "bias": jnp.asarray(w[..., 0].ravel(), dtype)}
    grads[f"layer{i}"] = {"kernel": jnp.asarray(g, dtype),
                          "bias": jnp.asarray(g[..., 0].ravel(), dtype)}
  params["zeros"] = {"kernel": jnp.zeros((6, 3), np.float32)}
  grads["zeros"] = {"kernel": jnp.asarray(rng.normal(size=(6, 3)), np.float32)}
  return params, grads


def reference_update(grads, params, kept):
  """Masked gradient and per-leaf active counts by brute force."""
  g_leaves, treedef = jax.tree.flatten(grads)
  w_leaves = treedef.flatten_up_to(params)
  pool = [np.ndim(w) >= 2 for w in w_leaves]
  scores = [ref.taylor(g, w) for g, w, f in zip(g_leaves, w_leaves, pool) if f]
  masks = iter(ref.top_k_flat(scores, kept))
  out, active = [], []
  for g, f in zip(g_leaves, pool):
    g = np.asarray(g)
    if f:
      m = next(masks)
      out.append(np.where(m, g, np.zeros((), g.dtype)))
      active.append(int(m.sum()))
    else:
      out.append(g)
  return treedef.unflatten(out), active


@pytest.mark.parametrize("selection", optax_gsm._selection.SELECTIONS)
@pytest.mark.parametrize("seed", range(4))
def test_mask_matches_brute_force(selection, seed):
  rng = np.random.default_rng(seed)
  params, grads = random_tree(rng)
  pool_size = sum(x.size for x in jax.tree.leaves(params) if x.ndim >= 2)
  for density in [1 / pool_size, 0.05, 0.3, 0.5, 0.97]:
    kept = ref.num_kept(pool_size, density=density)
    tx = optax_gsm.gsm(density=density, selection=selection)
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
    expected, active = reference_update(grads, params, kept)
    chex.assert_trees_all_equal(updates, expected)
    chex.assert_trees_all_equal_dtypes(updates, grads)
    got_active = [int(a) for a in jax.tree.leaves(state.active)]
    assert got_active == active
    assert sum(got_active) == kept


def test_all_scores_equal_keeps_lowest_indices():
  params = {"a": jnp.ones((4, 4)), "b": jnp.ones((2, 8))}
  grads = jax.tree.map(jnp.ones_like, params)
  tx = optax_gsm.gsm(compression=4)  # Q = 8 of 32
  updates, state = tx.update(grads, tx.init(params), params)
  np.testing.assert_array_equal(updates["a"].ravel(), [1.0] * 8 + [0.0] * 8)
  np.testing.assert_array_equal(updates["b"], np.zeros((2, 8)))
  assert int(state.active["a"]) == 8 and int(state.active["b"]) == 0


def test_compression_and_density_agree():
  rng = np.random.default_rng(0)
  params, grads = random_tree(rng, special=False)
  by_c = optax_gsm.gsm(compression=4)
  by_d = optax_gsm.gsm(density=0.25)
  out_c, _ = by_c.update(grads, by_c.init(params), params)
  out_d, _ = by_d.update(grads, by_d.init(params), params)
  chex.assert_trees_all_equal(out_c, out_d)


def test_density_is_exact_on_decimal_input():
  params = {"w": jnp.arange(1.0, 101.0).reshape(10, 10)}
  tx = optax_gsm.gsm(density=0.29)  # 100 * 0.29 is 28.999... in binary
  _, state = tx.update(params, tx.init(params), params)
  assert int(state.active["w"]) == 29


def test_leaves_outside_pool_pass_through():
  rng = np.random.default_rng(1)
  params, grads = random_tree(rng, special=False)
  tx = optax_gsm.gsm(compression=10)
  updates, state = tx.update(grads, tx.init(params), params)
  for name in params:
    if "bias" in params[name]:
      assert updates[name]["bias"] is grads[name]["bias"]
      assert isinstance(state.active[name]["bias"], optax.MaskedNode)


@pytest.mark.parametrize("prunable", [
    {"dense": True, "out": False},  # a prefix of params
    lambda p: {"dense": {"w": True, "b": True}, "out": {"w": False, "b": False}},
])
def test_custom_pool(prunable):
  params = {"dense": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.arange(3.0)},
            "out": {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}}
  grads = jax.tree.map(jnp.ones_like, params)
  tx = optax_gsm.gsm(compression=3, prunable=prunable)  # Q = 3 of 9
  updates, state = tx.update(grads, tx.init(params), params)
  # Scores |1 * w|: dense.b = [0, 1, 2] ranks first in leaf order ('b' < 'w').
  np.testing.assert_array_equal(updates["dense"]["w"], [[0, 0, 0], [1, 1, 1]])
  np.testing.assert_array_equal(updates["dense"]["b"], [0, 0, 0])
  chex.assert_trees_all_equal(updates["out"], grads["out"])
  assert int(state.active["dense"]["w"]) == 3


def test_magnitude_and_callable_criteria():
  params = {"w": jnp.array([[1.0, -4.0], [2.0, 3.0]])}
  grads = {"w": jnp.array([[10.0, 0.1], [0.1, 0.1]])}
  by_magnitude = optax_gsm.gsm(compression=2, criterion="magnitude")
  out, _ = by_magnitude.update(grads, by_magnitude.init(params), params)
  np.testing.assert_array_equal(
      out["w"], np.array([[0.0, 0.1], [0.0, 0.1]], np.float32))
  by_grad = optax_gsm.gsm(
      compression=4,
      criterion=lambda g, w: jax.tree.map(jnp.abs, g))
  out, _ = by_grad.update(grads, by_grad.init(params), params)
  np.testing.assert_array_equal(out["w"], [[10.0, 0.0], [0.0, 0.0]])


def test_gsm_sgd_matches_numpy_gsm():
  rng = np.random.default_rng(2)
  shapes = [(20, 10), (10,), (10, 5), (3, 3, 2, 4)]
  params = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]
  grads_seq = [[jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]
               for _ in range(6)]
  pool = [len(s) >= 2 for s in shapes]
  kept = ref.num_kept(sum(np.prod(s) for s, f in zip(shapes, pool) if f),
                      compression=5)
  hyper = dict(lr=0.05, momentum=0.9, weight_decay=0.01)
  opt = optax_gsm.gsm_sgd(hyper["lr"], compression=5,
                          momentum=hyper["momentum"],
                          weight_decay=hyper["weight_decay"])
  state = opt.init(params)
  step = jax.jit(opt.update)
  p = params
  for grads in grads_seq:
    updates, state = step(grads, state, p)
    p = optax.apply_updates(p, updates)
  expected, trace = ref.gsm_sgd_steps(params, grads_seq, kept=kept, pool=pool,
                                      **hyper)
  for got, want in zip(p, expected):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  for got, want in zip(state[2].trace, trace):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_passive_weights_decay_and_keep_momentum():
  # w[0] has the larger score at step 1 only, then stays passive. Q = 1.
  params = {"w": jnp.array([[1.0, 1.0]])}
  lr, beta, eta = 0.1, 0.9, 0.05
  opt = optax_gsm.gsm_sgd(lr, compression=2, momentum=beta, weight_decay=eta)
  step = jax.jit(opt.update)
  state = opt.init(params)
  grads = {"w": jnp.array([[5.0, 1.0]])}
  updates, state = step(grads, state, params)
  params = optax.apply_updates(params, updates)
  z = float(state[2].trace["w"][0, 0])
  assert z == pytest.approx(eta * 1.0 + 5.0)
  largest = abs(float(params["w"][0, 0]))
  for _ in range(200):
    grads = {"w": jnp.array([[0.01, 1.0]])}
    z_prev, w_prev = z, float(params["w"][0, 0])
    updates, state = step(grads, state, params)
    params = optax.apply_updates(params, updates)
    z = float(state[2].trace["w"][0, 0])
    # Passive: no gradient, but decay and the old momentum, never reset.
    assert z == pytest.approx(beta * z_prev + eta * w_prev, rel=1e-4, abs=1e-7)
    assert int(state[0].active["w"]) == 1
    largest = max(largest, abs(float(params["w"][0, 0])))
  assert abs(float(params["w"][0, 0])) < 1e-2 * largest


def test_compression_one_is_momentum_sgd():
  rng = np.random.default_rng(3)
  params = {"a": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
  gsm_opt = optax_gsm.gsm_sgd(0.1, compression=1, momentum=0.9,
                              weight_decay=1e-3)
  sgd_opt = optax.chain(optax.add_decayed_weights(1e-3),
                        optax.sgd(0.1, momentum=0.9))
  p_gsm, p_sgd = params, params
  s_gsm, s_sgd = gsm_opt.init(params), sgd_opt.init(params)
  for _ in range(5):
    grads = jax.tree.map(
        lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)
    u, s_gsm = gsm_opt.update(grads, s_gsm, p_gsm)
    p_gsm = optax.apply_updates(p_gsm, u)
    u, s_sgd = sgd_opt.update(grads, s_sgd, p_sgd)
    p_sgd = optax.apply_updates(p_sgd, u)
  chex.assert_trees_all_equal(p_gsm, p_sgd)


def test_learning_rate_schedule():
  params = {"w": jnp.ones((2, 2))}
  schedule = optax.linear_schedule(1.0, 0.0, 10)
  opt = optax_gsm.gsm_sgd(schedule, compression=1, momentum=0.0,
                          weight_decay=0.0)
  state = opt.init(params)
  for lr in [1.0, 0.9]:
    updates, state = opt.update(params, state, params)
    np.testing.assert_allclose(updates["w"], -lr * np.ones((2, 2)), rtol=1e-6)


@pytest.mark.parametrize("selection",
                         ["histogram", "radix_count", "auto", "sort", "top_k"])
def test_no_recompilation_on_second_step(selection):
  params = {"w": jnp.ones((6, 4)), "b": jnp.ones(4)}
  opt = optax_gsm.gsm_sgd(0.1, compression=3, selection=selection)
  step = jax.jit(opt.update)
  state = opt.init(params)
  for i in range(3):
    grads = jax.tree.map(lambda x: x * (i + 1.0), params)
    updates, state = step(grads, state, params)
    params = optax.apply_updates(params, updates)
  assert step._cache_size() == 1


def test_composes_with_chain_and_masked():
  params = {"net": {"w": jnp.arange(1.0, 9.0).reshape(2, 4)},
            "frozen": {"w": jnp.ones((2, 2))}}
  grads = jax.tree.map(jnp.ones_like, params)
  opt = optax.chain(
      optax.masked(optax_gsm.gsm(compression=2),
                   {"net": True, "frozen": False}),
      optax.clip_by_global_norm(100.0),
      optax.sgd(1.0),
  )
  updates, _ = opt.update(grads, opt.init(params), params)
  # Within "net", the 4 largest |1 * w| are the last four entries.
  np.testing.assert_array_equal(updates["net"]["w"],
                                [[0, 0, 0, 0], [-1, -1, -1, -1]])
  np.testing.assert_array_equal(updates["frozen"]["w"], -np.ones((2, 2)))


def test_jit_of_init_and_update_with_bfloat16():
  params = {"w": jnp.ones((4, 4), jnp.bfloat16)}
  opt = optax_gsm.gsm_sgd(0.1, compression=2)
  state = jax.jit(opt.init)(params)
  updates, _ = jax.jit(opt.update)(params, state, params)
  assert updates["w"].dtype == jnp.bfloat16


# Bad input.

@pytest.mark.parametrize("kwargs, match", [
    (dict(compression=0.5), "compression must be >= 1"),
    (dict(density=0.0), r"density must lie in \(0, 1\]"),
    (dict(density=1.5), r"density must lie in \(0, 1\]"),
    (dict(), "exactly one of"),
    (dict(compression=2, criterion="fisher"), "unknown criterion 'fisher'"),
    (dict(compression=2, selection="quick"), "unknown selection 'quick'"),
    (dict(compression=2, prunable={"a": False, "b": False}),
     "prunable selects no leaf"),
])
def test_bad_arguments_fail_at_construction(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optax_gsm.gsm(**kwargs)
  if "compression" in kwargs or "density" in kwargs:
    with pytest.raises(ValueError, match=match):
      optax_gsm.gsm_sgd(0.1, **kwargs)


def test_schedule_as_compression_is_rejected():
  with pytest.raises(TypeError, match="inject_hyperparams"):
    optax_gsm.gsm(density=optax.constant_schedule(0.1))


def test_callable_pool_selecting_nothing_fails_at_init():
  tx = optax_gsm.gsm(compression=2, prunable=lambda p: False)
  with pytest.raises(ValueError, match="prunable selects no leaf"):
    tx.init({"w": jnp.ones((2, 2))})
  with pytest.raises(ValueError, match="prunable selects no leaf"):
    optax_gsm.gsm(compression=2).init({"b": jnp.ones(3)})


def test_too_high_compression_fails_at_init():
  tx = optax_gsm.gsm(compression=100)
  with pytest.raises(ValueError, match="keeps floor"):
    tx.init({"w": jnp.ones((4, 4))})


def test_update_errors():
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
  tx = optax_gsm.gsm(compression=2)
  state = tx.init(params)
  with pytest.raises(ValueError, match="gsm needs params"):
    tx.update(params, state)
  with pytest.raises(ValueError, match="different tree structures"):
    tx.update({"w": jnp.ones((2, 2))}, state, params)
  int_params = {"w": jnp.ones((2, 2), jnp.int32)}
  tx = optax_gsm.gsm(compression=2, prunable={"w": True})
  with pytest.raises(TypeError, match=r"leaf \['w'\] of dtype int32"):
    tx.init(int_params)
  with pytest.raises(TypeError, match=r"leaf \['w'\] of dtype int32"):
    tx.update(int_params, state, int_params)


def test_criterion_with_wrong_shapes_fails():
  params = {"w": jnp.ones((2, 2))}
  tx = optax_gsm.gsm(compression=2, criterion=lambda g, w: {"w": jnp.ones(3)})
  with pytest.raises(ValueError, match="one score per pooled entry"):
    tx.update(params, tx.init(params), params)


def test_top_k_selection_rejects_traced_density():
  params = {"w": jnp.ones((4, 4))}
  opt = optax.inject_hyperparams(optax_gsm.gsm)(density=0.5, selection="top_k")
  state = opt.init(params)
  with pytest.raises(TypeError, match="static integer k"):
    jax.jit(opt.update)(params, state, params)


@pytest.mark.parametrize("density, kept", [(0.24999997, 2), (0.25, 2),
                                           (0.2, 1), (0.37, 2), (1.0, 8)])
def test_traced_density_absorbs_rounding(density, kept):
  params = {"w": jnp.arange(1.0, 9.0).reshape(2, 4)}
  opt = optax.inject_hyperparams(optax_gsm.gsm)(density=density)
  _, state = jax.jit(opt.update)(params, opt.init(params), params)
  assert int(state.inner_state.active["w"]) == kept


@pytest.mark.parametrize("pool_size", [3_000_001, 25_557_032, 1_000_000_003])
def test_static_ratio_floors_large_pools_exactly(pool_size):
  from optax_gsm import _pool  # the arithmetic alone, no such arrays
  rng = np.random.default_rng(pool_size)
  for density in rng.random(50).tolist() + [0.5, 0.29, 0.1, 1 / 3]:
    assert _pool.num_kept(pool_size, None, density) == ref.num_kept(
        pool_size, density=density)
  for compression in [1.5, 3, 7.3, 60, 125, 300]:
    assert _pool.num_kept(pool_size, compression, None) == ref.num_kept(
        pool_size, compression=compression)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_injected_ratio_is_not_rounded_to_narrow_params(dtype):
  # inject_hyperparams casts a Python float to the params' dtype: bf16 0.3 is
  # 0.30078125, which kept 3007 of 10,000 instead of 3000. That cast is
  # rejected; float32 values (our schedules) are not cast and count exactly.
  params = {"w": jnp.ones((100, 100), dtype)}
  with pytest.raises(TypeError, match=f"density has dtype {jnp.dtype(dtype)}"):
    optax.inject_hyperparams(optax_gsm.gsm)(density=0.3).init(params)
  schedule = optax.constant_schedule(0.3)
  for density in (jnp.float32(0.3), optax_gsm.density_schedule(0.3, 0, 1),
                  optax_gsm.checked_density_schedule(schedule, 2)):
    opt = optax.inject_hyperparams(optax_gsm.gsm)(density=density)
    state = opt.init(params)
    for _ in range(2):
      _, state = jax.jit(opt.update)(params, state, params)
    assert int(state.inner_state.active["w"]) == ref.num_kept(
        10_000, density=0.3) == 3000


@pytest.mark.parametrize("pool_size", [1_000_000, 110_000_000, 1_000_000_000])
@pytest.mark.parametrize("ratio", ["density", "compression"])
def test_injected_ratio_stays_within_the_float32_bound(pool_size, ratio):
  from optax_gsm import _pool  # the arithmetic alone, no such arrays
  density = np.random.default_rng(pool_size).uniform(0.001, 1, 300)
  values = density if ratio == "density" else 1 / density
  kept = jax.jit(jax.vmap(lambda v: _pool.num_kept(
      pool_size, *((None, v) if ratio == "density" else (v, None)))))(
          jnp.asarray(values, jnp.float32))
  want = np.array([ref.num_kept(pool_size, **{ratio: float(v)})
                   for v in values])
  # The README's bound: |Q - floor(N d)| <= 1 + 3 * 2**-24 * N * d.
  assert np.all(np.abs(np.asarray(kept, np.int64) - want)
                <= 1 + 3 * 2.0**-24 * want)
