"""Tests of prune(), keep_masked(), apply_masks() and sparsity_report()."""

import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import numpy_reference as ref
import optax_gsm
from optax_gsm import _pool


def model_params(rng, dtype=np.float32):
  return {
      "conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 8)), dtype),
               "bias": jnp.asarray(rng.normal(size=(8,)), dtype)},
      "dense": {"kernel": jnp.asarray(rng.integers(-2, 3, (16, 10)), dtype),
                "bias": jnp.asarray(rng.normal(size=(10,)), dtype)},
  }


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.float16])
@pytest.mark.parametrize("compression", [1, 3, 10, 60])
def test_prune_keeps_exactly_q_by_global_magnitude(dtype, compression):
  rng = np.random.default_rng(compression)
  params = model_params(rng, dtype)
  pruned, masks = optax_gsm.prune(params, compression=compression)
  kernels = [params["conv"]["kernel"], params["dense"]["kernel"]]
  kept = ref.num_kept(sum(k.size for k in kernels), compression=compression)
  expected = ref.top_k_flat(
      [np.abs(np.asarray(k).astype(np.float32)) for k in kernels], kept)
  np.testing.assert_array_equal(masks["conv"]["kernel"], expected[0])
  np.testing.assert_array_equal(masks["dense"]["kernel"], expected[1])
  assert masks["conv"]["bias"] is None and masks["dense"]["bias"] is None
  for name, want in zip(["conv", "dense"], expected):
    got = np.asarray(pruned[name]["kernel"]).astype(np.float32)
    original = np.asarray(params[name]["kernel"]).astype(np.float32)
    np.testing.assert_array_equal(got, np.where(want, original, 0.0))
    assert not np.signbit(got[~want]).any()  # exactly +0.0
    assert pruned[name]["kernel"].dtype == params[name]["kernel"].dtype
    assert pruned[name]["bias"] is params[name]["bias"]


def test_prune_with_taylor_criterion_needs_grads():
  params = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]])}
  with pytest.raises(ValueError, match="needs grads"):
    optax_gsm.prune(params, compression=2, criterion="taylor")
  grads = {"w": jnp.array([[4.0, 1.0], [0.1, 1.0]])}
  pruned, _ = optax_gsm.prune(params, compression=2, criterion="taylor",
                              grads=grads)
  np.testing.assert_array_equal(pruned["w"], [[1.0, 0.0], [0.0, 4.0]])


def test_prune_bad_input():
  params = {"w": jnp.ones((4, 4))}
  with pytest.raises(ValueError, match="exactly one of"):
    optax_gsm.prune(params)
  with pytest.raises(ValueError, match=r"= 0 entries; lower the compression"):
    optax_gsm.prune(params, compression=100)
  with pytest.raises(ValueError, match="prunable selects no leaf"):
    optax_gsm.prune({"b": jnp.ones(3)}, compression=2)


def test_keep_masked_holds_zeros_exactly():
  rng = np.random.default_rng(0)
  params = model_params(rng)
  pruned, masks = optax_gsm.prune(params, compression=5)
  opt = optax.chain(optax.add_decayed_weights(1e-3),
                    optax.sgd(0.1, momentum=0.9),
                    optax_gsm.keep_masked(masks))
  state = opt.init(pruned)
  p = pruned
  step = jax.jit(opt.update)
  for _ in range(5):
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape),
                                               x.dtype), p)
    updates, state = step(grads, state, p)
    p = optax.apply_updates(p, updates)
  for name in ["conv", "dense"]:
    m = np.asarray(masks[name]["kernel"])
    w = np.asarray(p[name]["kernel"])
    np.testing.assert_array_equal(w[~m], 0.0)
    assert np.all(w[m] != np.asarray(pruned[name]["kernel"])[m])  # trained
    assert not np.array_equal(p[name]["bias"], pruned[name]["bias"])


def test_keep_masked_zeroes_nonzero_pruned_entries():
  params = {"w": jnp.array([3.0, -2.5])}
  masks = {"w": jnp.array([True, False])}
  opt = optax_gsm.keep_masked(masks)
  updates, _ = opt.update({"w": jnp.array([0.5, 0.5])}, opt.init(params),
                          params)
  np.testing.assert_array_equal(optax.apply_updates(params, updates)["w"],
                                [3.5, 0.0])


def test_keep_masked_errors():
  masks = {"w": jnp.ones((2, 2), bool)}
  with pytest.raises(ValueError, match="masks must match params"):
    optax_gsm.keep_masked(masks).init({"w": jnp.ones((2, 2)), "b": jnp.ones(2)})
  with pytest.raises(ValueError, match="a mask of shape"):
    optax_gsm.keep_masked(masks).init({"w": jnp.ones((3, 2))})
  opt = optax_gsm.keep_masked(masks)
  params = {"w": jnp.ones((2, 2))}
  with pytest.raises(ValueError, match="needs params"):
    opt.update(params, opt.init(params))


def test_apply_masks():
  params = {"w": jnp.array([[1.0, 2.0]]), "b": jnp.array([5.0])}
  masks = {"w": jnp.array([[False, True]]), "b": None}
  out = optax_gsm.apply_masks(params, masks)
  np.testing.assert_array_equal(out["w"], [[0.0, 2.0]])
  assert out["b"] is params["b"]


def test_sparsity_report_from_params_and_masks():
  rng = np.random.default_rng(4)
  params = model_params(rng)
  pruned, masks = optax_gsm.prune(params, compression=4)
  from_params = optax_gsm.sparsity_report(pruned)
  from_masks = optax_gsm.sparsity_report(masks)
  for report in [from_params, from_masks]:
    assert [l.path for l in report.leaves] == ["conv/kernel", "dense/kernel"]
    assert report.total == 3 * 3 * 2 * 8 + 16 * 10
    assert report.kept == ref.num_kept(report.total, compression=4)
    assert report.compression == pytest.approx(report.total / report.kept)
    assert sum(l.kept for l in report.leaves) == report.kept
  # Pruned kernels holding a zero weight that was kept count it as pruned in
  # a params report only; the masks say what was kept.
  assert from_masks.leaves[1].kept == int(np.sum(masks["dense"]["kernel"]))
  data = from_masks.as_dict()
  assert data["leaves"][0]["shape"] == [3, 3, 2, 8]
  assert data["density"] == pytest.approx(from_masks.density)
  table = str(from_masks)
  assert "conv/kernel" in table and "3x3x2x8" in table and "total" in table
  assert f"{from_masks.total:,}" in table


def test_sparsity_report_custom_pool_and_errors():
  params = {"w": jnp.array([[0.0, 1.0]]), "b": jnp.array([0.0, 0.0, 1.0])}
  report = optax_gsm.sparsity_report(params, prunable={"w": True, "b": True})
  assert [(l.path, l.kept, l.total) for l in report.leaves] == [
      ("b", 1, 3), ("w", 1, 2)]
  with pytest.raises(ValueError, match="no leaf"):
    optax_gsm.sparsity_report({"b": jnp.ones(3)})


def test_gsm_then_prune_is_lossless_on_passive_weights():
  """After GSM, the passive weights are ~0, so the hard prune barely moves."""
  rng = np.random.default_rng(5)
  support = np.zeros(200, bool)
  support[rng.choice(200, 20, replace=False)] = True  # exactly the 10% kept
  target = jnp.asarray((rng.normal(size=200) + 2 * np.sign(rng.normal(size=200)))
                       * support, jnp.float32).reshape(20, 10)
  x = jnp.asarray(rng.normal(size=(256, 20)), jnp.float32)
  y = x @ target

  def loss(p):
    return jnp.mean((x @ p["w"] - y) ** 2)

  params = {"w": jnp.asarray(rng.normal(size=(20, 10)) * 0.1, jnp.float32)}
  opt = optax_gsm.gsm_sgd(0.05, density=0.1, momentum=0.9, weight_decay=1e-2)
  state = opt.init(params)

  @jax.jit
  def step(p, s):
    updates, s = opt.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, updates), s

  for _ in range(1500):
    params, state = step(params, state)
  pruned, masks = optax_gsm.prune(params, density=0.1)
  initial_loss = float(loss({"w": jnp.zeros((20, 10))}))
  assert float(loss(params)) < 0.05 * initial_loss  # trained
  assert abs(float(loss(pruned)) - float(loss(params))) < 1e-3 * initial_loss
  assert float(jnp.max(jnp.abs(params["w"] - pruned["w"]))) < 1e-3
  np.testing.assert_array_equal(masks["w"], np.asarray(target) != 0)


def test_keep_masked_lands_on_zero_with_narrower_updates():
  params = {"w": jnp.array([0.1234567, 1.0], jnp.float32)}
  masks = {"w": jnp.array([False, True])}
  opt = optax_gsm.keep_masked(masks)
  updates = {"w": jnp.array([0.5, 0.5], jnp.bfloat16)}
  updates, _ = opt.update(updates, opt.init(params), params)
  new = optax.apply_updates(params, updates)
  assert new["w"].dtype == jnp.float32
  np.testing.assert_array_equal(new["w"], [0.0, 1.5])


def test_prune_with_callable_criterion_needs_grads():
  with pytest.raises(ValueError, match="needs grads"):
    optax_gsm.prune({"w": jnp.ones((2, 2))}, density=0.5,
                    criterion=optax_gsm.taylor_score)


# Review regressions: masks, None leaves and ratio checks.


def test_keep_masked_takes_prunes_masks_when_params_hold_none():
  # eqx.filter(model, eqx.is_array) leaves None where a field is no array.
  params = {"w": jnp.array([[1.0, -4.0], [0.5, 3.0]]), "b": None}
  pruned, masks = optax_gsm.prune(params, compression=2)
  assert masks["b"] is None
  opt = optax.chain(optax.sgd(0.1), optax_gsm.keep_masked(masks))
  grads = {"w": jnp.ones((2, 2)), "b": None}
  updates, _ = opt.update(grads, opt.init(pruned), pruned)
  new = optax.apply_updates(pruned, updates)
  keep = np.abs(np.asarray(params["w"])) >= 3
  np.testing.assert_allclose(new["w"], np.where(keep, np.asarray(params["w"])
                                                - 0.1, 0.0))
  assert new["b"] is None
  np.testing.assert_array_equal(
      optax_gsm.apply_masks(params, masks)["w"], pruned["w"])
  with pytest.raises(ValueError, match="None"):  # a mask for a None leaf
    optax_gsm.keep_masked({"w": masks["w"], "b": jnp.ones(2, bool)}).init(
        pruned)


def test_keep_masked_under_map_params():
  pruned, masks = optax_gsm.prune({"w": jnp.array([[1.0, -4.0], [0.5, 3.0]])},
                                  compression=2)
  opt = optax.chain(optax.sgd(0.1, momentum=0.9),
                    optax_gsm.keep_masked(masks))
  state = optax.tree.map_params(opt, lambda x: x.astype(jnp.bfloat16),
                                opt.init(pruned))
  assert state[0][0].trace["w"].dtype == jnp.bfloat16
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), pruned)
  updates, _ = opt.update(jax.tree.map(jnp.ones_like, params), state, params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(np.asarray(new["w"], np.float32) == 0,
                                ~np.asarray(masks["w"]))


def test_apply_masks_does_not_broadcast():
  params = {"w": jnp.ones((3, 4))}
  with pytest.raises(ValueError, match="not broadcast"):
    optax_gsm.apply_masks(params, {"w": jnp.array([True, False, True, False])})
  mask = np.random.default_rng(0).random((3, 4)) < 0.5
  np.testing.assert_array_equal(
      optax_gsm.apply_masks(params, {"w": jnp.asarray(mask)})["w"],
      mask.astype(np.float32))


@pytest.mark.parametrize("ratio, error, match", [
    ({"compression": float("inf")}, ValueError, "compression must be finite"),
    ({"compression": 10**400}, ValueError, "compression must be finite"),
    ({"compression": jnp.array(jnp.inf)}, ValueError, "must be finite"),
    ({"density": float("nan")}, ValueError, "density must be finite"),
    ({"density": True}, TypeError, "density must be a number"),
    ({"compression": True}, TypeError, "compression must be a number"),
    ({"compression": np.bool_(True)}, TypeError, "compression must be a"),
    ({"density": "0.5"}, TypeError, "density must be a number"),
    ({"density": jnp.full(2, 0.5)}, TypeError, "density must be a number"),
    ({"density": jnp.bfloat16(0.5)}, TypeError, "density has dtype bfloat16"),
    ({"density": np.float16(0.5)}, TypeError, "density has dtype float16"),
])
def test_bad_ratio_raises_at_construction(ratio, error, match):
  with pytest.raises(error, match=match):
    optax_gsm.gsm(**ratio)
  with pytest.raises(error, match=match):
    optax_gsm.prune({"w": jnp.ones((4, 4))}, **ratio)
  with pytest.raises(error, match=match):
    optax_gsm.hard_prune_at(0, **ratio)


def test_concrete_array_ratio_giving_q_zero_raises():
  params = {"w": jnp.ones((10, 10))}
  with pytest.raises(ValueError, match=r"floor\(100 entries / compression "
                     r"200\) = 0 entries; lower the compression"):
    optax_gsm.prune(params, compression=jnp.float32(200.0))
  opt = optax.inject_hyperparams(optax_gsm.gsm)(density=0.001)
  with pytest.raises(ValueError, match=r"density 0.001\) = 0 entries"):
    opt.init(params)
  # Eager update with a concrete array raises too; under jit it cannot, and
  # Q = 0 masks the whole pool (as documented).
  tx = optax_gsm.gsm(density=jnp.float32(0.5))
  state = tx.init(params)
  with pytest.raises(ValueError, match="= 0 entries"):
    optax_gsm.gsm(density=jnp.float32(0.001)).update(params, state, params)
  updates, _ = jax.jit(lambda d: optax_gsm.gsm(density=d).update(
      params, state, params))(jnp.float32(0.001))
  assert not np.any(updates["w"])


def test_numpy_float32_density_keeps_what_jnp_float32_keeps():
  params = {"w": jnp.arange(1.0, 101.0).reshape(10, 10)}
  expected = ref.num_kept(100, density=0.29)
  assert expected == 29
  for density in (0.29, np.float32(0.29), jnp.float32(0.29),
                  np.array(0.29, np.float32), np.float64(0.29)):
    _, masks = optax_gsm.prune(params, density=density)
    assert int(masks["w"].sum()) == expected, density
  with jax.enable_x64(True):  # float64 arithmetic, the float32 ratio's ulps
    assert int(_pool.num_kept(100, None, jnp.float32(0.29))) == expected
    assert int(_pool.num_kept(100, None, jnp.float64(0.29))) == expected


def test_concrete_array_ratio_giving_q_zero_raises_under_jit_too():
  """A concrete array closed over by a jitted function is not traced: its
  Q is known, so Q = 0 raises there as it does eagerly."""
  params = {"w": jnp.ones((10, 10))}
  ratio = jnp.float32(200.)
  with pytest.raises(ValueError, match="= 0"):
    jax.jit(lambda q: optax_gsm.prune(q, compression=ratio))(params)
  with pytest.raises(ValueError, match="= 0"):
    jax.jit(lambda q: optax_gsm.prune_share(q, compression=ratio))(params)


@pytest.mark.parametrize("pool,density", [
    (50_000, 0.9), (266_200, 0.21), (100_000, 0.25), (100, 0.29)])
def test_float32_ratio_keeps_the_same_q_whatever_its_container(pool, density):
  """NumPy and JAX float32 scalars, eager or under jit, keep what the Python
  float keeps: floor(N d) of the intended d."""
  from optax_gsm import _pool  # pylint: disable=g-import-not-at-top
  want = _pool.num_kept(pool, None, density)
  assert want == math.floor(pool * density + 1e-9)
  for value in (np.float32(density), jnp.float32(density),
                np.array(density, np.float32)):
    assert _pool.num_kept(pool, None, value) == want
  assert int(jax.jit(lambda d: _pool.num_kept(pool, None, d))(
      jnp.float32(density))) == want
