"""GSM pruning while training data- and model-parallel on 8 CPU devices.

A Flax MLP learns scikit-learn's 8x8 digits on a ``("data", "model")`` mesh
of 4 x 2 fake CPU devices: the batch is split over ``"data"``, the hidden
layers over ``"model"`` (the first kernel by columns, the second by rows, as
in Megatron). ``optax_gsm.gsm_sgd`` ranks all kernels together every step;
on a sharded model each device histograms its own shard and only the
histograms are summed across devices. At the end the model is hard-pruned to
the target compression and the per-layer sparsity is printed.

Run: ``python examples/sharded_training.py [--steps 800] [--compression 10]``
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_num_cpu_devices", 8)  # before any JAX computation

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import optax_gsm
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples.common import models  # pylint: disable=wrong-import-position


def param_specs(params):
  """Megatron-style layout: Dense_0 by columns, Dense_1 by rows."""
  def spec(path, leaf):
    name = jax.tree_util.keystr(path)
    if "Dense_0" in name:
      return P(None, "model") if leaf.ndim == 2 else P("model")
    if "Dense_1" in name and leaf.ndim == 2:
      return P("model", None)
    return P()
  return jax.tree_util.tree_map_with_path(spec, params)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=800)
  parser.add_argument("--compression", type=float, default=10.0)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--lr", type=float, default=0.05)
  args = parser.parse_args()

  mesh = jax.make_mesh((4, 2), ("data", "model"),
                       axis_types=(AxisType.Auto,) * 2)
  digits = load_digits()
  x = (digits.images / 16.0).astype(np.float32)
  x_train, x_test, y_train, y_test = train_test_split(
      x, digits.target.astype(np.int32), test_size=0.25, random_state=0)

  model = models.MLP((256, 128, 10))
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8)))
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s),
                           param_specs(params),
                           is_leaf=lambda s: isinstance(s, P))
  params = jax.device_put(params, shardings)
  batch_sharding = NamedSharding(mesh, P("data"))
  opt = optax_gsm.gsm_sgd(args.lr, compression=args.compression,
                          momentum=0.99, weight_decay=5e-4)
  opt_state = opt.init(params)

  def loss_fn(params, x, y):
    logits = model.apply(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def accuracy(params, x, y):
    return models.accuracy(model.apply(params, x), y)

  rng = np.random.default_rng(0)
  print(f"devices: {jax.device_count()} ({dict(mesh.shape)}); "
        f"pool: {optax_gsm.sparsity_report(params).total:,} kernel weights, "
        f"compression {args.compression:g}")
  start = time.perf_counter()
  for i in range(1, args.steps + 1):
    index = rng.integers(0, len(x_train), args.batch)
    xb = jax.device_put(x_train[index], batch_sharding)
    yb = jax.device_put(y_train[index], batch_sharding)
    # Wait for each step: on fake CPU devices, letting the next step start
    # while devices still finish this one can deadlock XLA:CPU's in-process
    # collectives (seen in ~40% of runs here; never with this wait).
    params, opt_state, loss = jax.block_until_ready(
        step(params, opt_state, xb, yb))
    if i % 100 == 0 or i == 1:
      print(f"step {i:4d}  loss {float(loss):.4f}  "
            f"test accuracy {float(accuracy(params, x_test, y_test)):.4f}  "
            f"({time.perf_counter() - start:.1f}s)")

  dense_accuracy = float(accuracy(params, x_test, y_test))
  pruned, _ = optax_gsm.prune(params, compression=args.compression)
  pruned_accuracy = float(accuracy(pruned, x_test, y_test))
  kernel = pruned["params"]["Dense_0"]["kernel"]
  print(f"\nDense_0 kernel sharding after training: {kernel.sharding.spec} "
        f"over {len(kernel.sharding.device_set)} devices")
  print(f"test accuracy: before the hard prune {dense_accuracy:.4f}, "
        f"after {pruned_accuracy:.4f}\n")
  print(optax_gsm.sparsity_report(pruned))


if __name__ == "__main__":
  main()
