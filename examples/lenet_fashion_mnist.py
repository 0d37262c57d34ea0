"""Prune LeNet-300-100 on Fashion-MNIST 60x with GSM, in about a minute on CPU.

Dense training, then GSM (``optax_gsm.gsm_sgd``), then the hard prune with no
fine-tuning; prints progress, the per-layer sparsity table and accuracies.

  apt-get install dataset-fashion-mnist   # or --data-dir DIR with MNIST files
  python examples/lenet_fashion_mnist.py [--steps 3000] [--compression 60]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_gsm
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples.common import datasets  # pylint: disable=wrong-import-position
from examples.common import models


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data-dir", default=datasets.FASHION_MNIST_DIR)
  p.add_argument("--steps", type=int, default=3000, help="per phase")
  p.add_argument("--compression", type=float, default=60.0)
  p.add_argument("--batch-size", type=int, default=64)
  args = p.parse_args()
  if args.steps < 10:
    raise ValueError(f"--steps must be >= 10, got {args.steps}.")

  train, test = datasets.load_idx_dataset(args.data_dir)
  mean, std = train.images.mean() / 255.0, train.images.std() / 255.0
  x_train = jnp.asarray(datasets.normalize(train.images, mean, std))
  x_test = jnp.asarray(datasets.normalize(test.images, mean, std))
  y_train, y_test = jnp.asarray(train.labels), jnp.asarray(test.labels)

  model = models.lenet_300_100()
  params = model.init(jax.random.key(0), x_train[:1])
  loss_fn = lambda p, x, y: optax.losses.softmax_cross_entropy_with_integer_labels(
      model.apply(p, x), y).mean()
  accuracy = jax.jit(lambda p: models.accuracy(model.apply(p, x_test), y_test))
  rng = np.random.default_rng(0)

  def fit(params, opt, name):
    @jax.jit
    def step(params, state, idx):
      loss, grads = jax.value_and_grad(loss_fn)(params, x_train[idx],
                                                y_train[idx])
      updates, state = opt.update(grads, state, params)
      return optax.apply_updates(params, updates), state, loss

    state, start = opt.init(params), time.perf_counter()
    for i in range(args.steps):
      idx = rng.integers(0, len(y_train), args.batch_size)
      params, state, loss = step(params, state, idx)
      if (i + 1) % (args.steps // 5) == 0:
        print(f"{name} step {i + 1}/{args.steps} loss {float(loss):.4f} "
              f"({time.perf_counter() - start:.1f}s)", flush=True)
    return params

  dense = fit(params, optax.sgd(optax.cosine_decay_schedule(3e-2, args.steps),
                                momentum=0.9), "dense")
  # Passive weights shrink by exp(-sum(lr) * wd / (1 - momentum)): make it e^-6.
  lr, momentum = 1e-2, 0.99
  wd = 6.0 * (1 - momentum) / (lr * args.steps * 0.9)
  schedule = optax.piecewise_constant_schedule(lr, {int(0.8 * args.steps): 0.1})
  sparse = fit(dense, optax_gsm.gsm_sgd(
      schedule, args.compression, momentum=momentum, weight_decay=wd,
      weight_decay_mask=optax_gsm.default_prunable), "gsm")
  pruned, masks = optax_gsm.prune(sparse, args.compression)
  print(optax_gsm.sparsity_report(masks))
  print(f"| model | dense acc | GSM before prune | GSM pruned ({args.compression:g}x) |")
  print("|---|---|---|---|")
  print(f"| LeNet-300-100 | {float(accuracy(dense)):.4f} | "
        f"{float(accuracy(sparse)):.4f} | {float(accuracy(pruned)):.4f} |")


if __name__ == "__main__":
  main()
