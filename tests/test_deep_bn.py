"""recalibrate_batch_stats and dead_filter_outputs on NNX batch norm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import optax_gsm
from examples.common import models


class ConvBN(nnx.Module):

  def __init__(self, rngs):
    self.conv = nnx.Conv(2, 4, (3, 3), use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(4, momentum=0.9, rngs=rngs)

  def __call__(self, x):
    return self.bn(self.conv(x))


def batches(n, seed=0):
  keys = jax.random.split(jax.random.key(seed), n)
  return [2.0 + 3.0 * jax.random.normal(k, (16, 5, 5, 2)) for k in keys]


def test_recalibration_is_the_plain_average_of_batch_statistics():
  model = ConvBN(nnx.Rngs(0))
  model.eval()
  kernel = np.asarray(model.conv.kernel[...])
  xs = batches(5)
  assert optax_gsm.recalibrate_batch_stats(model, xs) == 5
  # numpy reference: per-batch biased mean and variance of the conv output.
  outs = [np.asarray(jax.lax.conv_general_dilated(
      np.asarray(x), kernel, (1, 1), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))).reshape(-1, 4) for x in xs]
  np.testing.assert_allclose(model.bn.mean[...],
                             np.mean([o.mean(0) for o in outs], 0),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(model.bn.var[...],
                             np.mean([o.var(0) for o in outs], 0),
                             rtol=1e-4, atol=1e-5)
  # Mode, momentum and weights are as they were.
  assert model.bn.use_running_average and model.bn.momentum == 0.9
  np.testing.assert_array_equal(model.conv.kernel[...], kernel)


def test_recalibration_restores_training_mode_and_resnet_runs():
  model = models.ResNet(8, (2, 4, 4), rngs=nnx.Rngs(0))
  model.train()
  before = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
  optax_gsm.recalibrate_batch_stats(
      model, [jax.random.normal(jax.random.key(i), (8, 28, 28, 1)) + 1.0
              for i in range(2)])
  after = nnx.state(model, nnx.BatchStat)
  changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before),
                                                  jax.tree.leaves(after))]
  assert all(changed)
  assert not model.bn.use_running_average  # back in training mode


def test_recalibration_errors_name_the_problem():
  with pytest.raises(ValueError, match="no nnx.BatchNorm"):
    optax_gsm.recalibrate_batch_stats(nnx.Linear(2, 2, rngs=nnx.Rngs(0)),
                                      [jnp.ones((1, 2))])
  model = ConvBN(nnx.Rngs(0))
  with pytest.raises(ValueError, match="batches is empty"):
    optax_gsm.recalibrate_batch_stats(model, [])
  assert model.bn.momentum == 0.9


def test_dead_filter_outputs_the_constant_batch_norm_emits():
  model = ConvBN(nnx.Rngs(0))
  model.bn.mean[...] = jnp.array([0.5, -1.0, 2.0, 0.1])
  model.bn.var[...] = jnp.array([1.0, 4.0, 0.25, 2.0])
  model.bn.scale[...] = jnp.array([1.0, 2.0, -3.0, 0.5])
  model.bn.bias[...] = jnp.array([0.0, 0.3, 1.0, -0.2])
  model.conv.kernel[...] = model.conv.kernel[...].at[..., 2].set(0.0)
  model.eval()
  report = optax_gsm.dead_filter_outputs(model)
  assert list(report) == ["bn"] and report["bn"]["dead"] == [2]
  const = report["bn"]["constant"][0]
  # -3 * (0 - 2) / sqrt(0.25 + eps) + 1 = 13 (eps = 1e-5)
  assert const == pytest.approx(-3.0 * -2.0 / np.sqrt(0.25 + 1e-5) + 1.0)
  out = model(batches(1)[0])
  np.testing.assert_allclose(out[..., 2], const, rtol=1e-6)
  assert np.std(np.asarray(out[..., 1])) > 0  # live channels vary
