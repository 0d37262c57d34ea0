"""Tests of structured (filter-level) GSM, filter pruning and shrinking."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_gsm
from examples.common import models


def _pool_without_output(params, output):
  """Kernels of every layer but ``output``; biases and the output layer out."""
  return {"params": {name: {k: (k == "kernel" and name != output)
                            for k in layer}
                     for name, layer in params["params"].items()}}


def test_structured_gsm_keeps_top_filters_by_summed_taylor():
  rng = np.random.default_rng(0)
  params = {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 8)),
                                           jnp.float32),
                     "bias": jnp.zeros(8)},
            "dense": {"kernel": jnp.asarray(rng.normal(size=(16, 5)),
                                            jnp.float32)}}
  grads = jax.tree.map(
      lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
  tx = optax_gsm.structured_gsm(density=5 / 13)
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  # Brute force: filter score = sum of |g w| over all but the last axis.
  scores = np.concatenate([
      np.abs(np.asarray(grads[n]["kernel"] * params[n]["kernel"])).reshape(
          -1, params[n]["kernel"].shape[-1]).sum(0) for n in ("conv", "dense")])
  want = np.zeros(13, bool)
  want[np.argsort(-scores, kind="stable")[:5]] = True
  got = []
  for n in ("conv", "dense"):
    u, g = np.asarray(updates[n]["kernel"]), np.asarray(grads[n]["kernel"])
    flat_u, flat_g = u.reshape(-1, u.shape[-1]), g.reshape(-1, g.shape[-1])
    kept = (flat_u == flat_g).all(0)
    assert np.all(kept | (flat_u == 0).all(0))  # whole filters only
    got.append(kept)
  np.testing.assert_array_equal(np.concatenate(got), want)
  np.testing.assert_array_equal(updates["conv"]["bias"], grads["conv"]["bias"])
  assert int(state.active["conv"]["kernel"]) + int(
      state.active["dense"]["kernel"]) == 5


def test_structured_pool_needs_an_output_axis():
  params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
  with pytest.raises(ValueError, match=r"\['b'\] has shape \(3,\)"):
    optax_gsm.structured_gsm(density=0.5, prunable=True).init(params)
  with pytest.raises(ValueError, match="output axis"):
    optax_gsm.structured_prune(params, density=0.5, prunable=True)


@pytest.mark.parametrize("model, shape, output, how", [
    (models.MLP((32, 16, 10)), (5, 8, 8), "Dense_2", dict(reduction="mean")),
    (models.LeNet5(widths=(8, 12, 32)), (2, 16, 16, 1), "Dense_1",
     dict(criterion="taylor", normalize_layers=True)),
])
def test_prune_then_shrink_keeps_logits(model, shape, output, how):
  x = jax.random.normal(jax.random.key(1), shape)
  params = jax.jit(model.init)(jax.random.key(0), x)
  # Non-zero biases, so that a pruned filter's bias must go too.
  params = jax.tree.map(lambda p: p + 0.05 if p.ndim == 1 else p, params)
  pool = _pool_without_output(params, output)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2)))(params)
  prune = jax.jit(lambda p, g: optax_gsm.structured_prune(
      p, density=0.4, prunable=pool, grads=g, **how))
  pruned, masks = prune(params, grads)
  small, small_params = optax_gsm.shrink(model, pruned)
  np.testing.assert_allclose(jax.jit(small.apply)(small_params, x),
                             jax.jit(model.apply)(pruned, x), atol=1e-5,
                             rtol=1e-5)
  filters = optax_gsm.structured.num_filters(params, pool)
  kept = sum(int(np.asarray(m).reshape(-1, m.shape[-1]).any(0).sum())
             for m in jax.tree.leaves(masks) if m.ndim >= 2)
  widths = (small.features[:-1] if isinstance(small, models.MLP)
            else small.widths)
  assert sum(widths) == int(np.floor(filters * 0.4)) == kept
  assert (sum(x.size for x in jax.tree.leaves(small_params))
          < sum(x.size for x in jax.tree.leaves(params)))


def test_shrink_drops_channels_nobody_reads():
  model = models.MLP((6, 2))
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 3)))
  k = params["params"]["Dense_1"]["kernel"]
  params["params"]["Dense_1"]["kernel"] = k.at[1:3].set(0.0)
  small, small_params = optax_gsm.shrink(model, params)
  assert small.features == (4, 2)
  x = jnp.ones((2, 3))
  np.testing.assert_allclose(small.apply(small_params, x),
                             model.apply(params, x), atol=1e-6)


def test_shrink_rejects_other_models():
  with pytest.raises(TypeError, match="Linen MLPs .* and LeNet-5s"):
    optax_gsm.shrink(object(), {})


def test_summed_scores_can_empty_a_layer_and_shrink_says_so():
  model = models.LeNet5()
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  pool = _pool_without_output(params, "Dense_1")
  # Summed |w| favours the 800-input dense filters over the 25-input convs.
  pruned, masks = jax.jit(lambda p: optax_gsm.structured_prune(
      p, density=0.4, prunable=pool))(params)
  assert not np.any(masks["params"]["Conv_0"]["kernel"])
  with pytest.raises(ValueError, match="no live channel"):
    optax_gsm.shrink(model, pruned)


def test_structured_gsm_takes_an_injected_density_schedule():
  params = {"k": jnp.ones((3, 8)) * jnp.arange(1.0, 9.0)}
  # Densities 1, .77, .53, .3: N * d is never an integer, where a float32
  # density computed under jit may land one ulp low and floor to one less.
  sched = optax_gsm.density_schedule(0.3, 0, 3, power=1)
  opt = optax.inject_hyperparams(optax_gsm.structured_gsm)(density=sched)
  update = jax.jit(opt.update)
  state = opt.init(params)
  active = []
  for _ in range(5):
    updates, state = update(params, state, params)
    active.append(int(state.inner_state.active["k"]))
    kept = np.asarray(updates["k"]).any(0)
    assert kept.sum() == active[-1] and kept[-active[-1]:].all()
  assert active == [8, 6, 4, 2, 2]


def test_shrink_takes_a_frozen_dict():
  import flax  # pylint: disable=g-import-not-at-top
  model = models.MLP((8, 3))
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4)))
  pool = {"params": {"Dense_0": {"kernel": True, "bias": False},
                     "Dense_1": False}}
  pruned, _ = optax_gsm.structured_prune(params, density=0.5, prunable=pool)
  small, small_params = optax_gsm.shrink(model, flax.core.freeze(pruned))
  assert small.features == (4, 3)
  assert isinstance(small_params, flax.core.FrozenDict)
  x = jax.random.normal(jax.random.key(1), (5, 4))
  np.testing.assert_allclose(small.apply(small_params, x),
                             model.apply(pruned, x), atol=1e-6)
  _, inner = optax_gsm.shrink(model, flax.core.freeze(pruned["params"]))
  assert set(inner) == {"Dense_0", "Dense_1"}
