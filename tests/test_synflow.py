"""Tests of iterative SynFlow pruning at initialization."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_gsm
from examples.common import models

MODEL = models.MLP((16, 16, 4))
SHAPE = (1, 8)


def _params(scale_middle=1.0):
  params = jax.jit(MODEL.init)(jax.random.key(0), jnp.zeros(SHAPE))
  k = params["params"]["Dense_1"]["kernel"]
  params["params"]["Dense_1"]["kernel"] = k * scale_middle
  return params


def _kept_per_layer(masks):
  return {n: int(np.sum(l["kernel"])) for n, l in masks["params"].items()}


def test_keeps_exactly_q_and_avoids_layer_collapse():
  params = _params(scale_middle=0.01)  # a layer of tiny weights
  pool, density = 8 * 16 + 16 * 16 + 16 * 4, 0.05
  q = int(np.floor(pool * density))
  # Global magnitude pruning removes the whole tiny layer: no path is left.
  mag_params, mag_masks = jax.jit(
      lambda p: optax_gsm.prune(p, density=density))(params)
  assert _kept_per_layer(mag_masks)["Dense_1"] == 0
  assert float(optax_gsm.synflow_objective(MODEL.apply, mag_params,
                                           SHAPE)) == 0.0
  pruned, masks = optax_gsm.synflow(MODEL.apply, params, SHAPE,
                                    density=density, rounds=100)
  kept = _kept_per_layer(masks)
  assert sum(kept.values()) == q
  assert min(kept.values()) >= 1, kept
  assert float(optax_gsm.synflow_objective(MODEL.apply, pruned, SHAPE)) > 0
  assert masks["params"]["Dense_0"]["bias"] is None
  for m, w in zip(jax.tree.leaves(masks), jax.tree.leaves(
      {"params": {n: {"kernel": l["kernel"]}
                  for n, l in pruned["params"].items()}})):
    assert np.all(np.asarray(w)[~np.asarray(m)] == 0)


def test_masks_ignore_a_layer_rescaling():
  # With zero biases R is homogeneous in each layer's scale, so every score
  # is multiplied by the same factor: the mask must not change.
  base = optax_gsm.synflow(MODEL.apply, _params(), SHAPE, compression=10,
                           rounds=20)[1]
  scaled = optax_gsm.synflow(MODEL.apply, _params(100.0), SHAPE,
                             compression=10, rounds=20)[1]
  for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(scaled)):
    np.testing.assert_array_equal(a, b)


def test_bad_arguments():
  params = _params()
  with pytest.raises(ValueError, match="rounds"):
    optax_gsm.synflow(MODEL.apply, params, SHAPE, density=0.5, rounds=0)
  with pytest.raises(ValueError, match="selection"):
    optax_gsm.synflow(MODEL.apply, params, SHAPE, density=0.5,
                      selection="top_k")
  with pytest.raises(ValueError, match="exactly one"):
    optax_gsm.synflow(MODEL.apply, params, SHAPE)


def test_pruned_entries_do_not_come_back_in_later_rounds():
  # Round 1 of 2 prunes a[0, 0] (score ties at 0 later on); before the fix
  # round 2 revived it and dropped the live b[0] instead.
  params = {"a": jnp.array([[0.001, 1.0], [0.001, 1.0]]),
            "b": jnp.array([[1.0], [1.0]])}
  apply_fn = lambda p, x: x @ p["a"] @ p["b"]
  _, masks = optax_gsm.synflow(apply_fn, params, (1, 2), density=4 / 6,
                               rounds=2)
  np.testing.assert_array_equal(masks["a"], [[False, True], [False, True]])
  np.testing.assert_array_equal(masks["b"], [[True], [True]])


def test_an_integer_leaf_is_left_out_of_the_gradient():
  # A step counter beside the params: jax.grad over it used to raise.
  params = _params()
  with_step = {**params, "step": jnp.int32(7)}
  apply = lambda p, x: MODEL.apply({"params": p["params"]}, x)
  _, masks = optax_gsm.synflow(apply, with_step, SHAPE, density=0.1,
                               rounds=5)
  _, want = optax_gsm.synflow(MODEL.apply, params, SHAPE, density=0.1,
                              rounds=5)
  assert masks["step"] is None
  jax.tree.map(np.testing.assert_array_equal, {"params": masks["params"]},
               want)
