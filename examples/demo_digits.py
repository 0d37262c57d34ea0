"""GSM in two minutes: prune an MLP on scikit-learn's digits 10x, no fine-tuning.

1. Train a dense MLP (64-256-128-10) with momentum SGD.
2. Continue training with ``optax_gsm.gsm_sgd`` at 10x compression: every step
   only the 10% of weights with the largest |grad * weight| over the whole
   model get their gradient; weight decay and momentum pull the rest to zero.
3. Hard-prune to exactly 10% of the weights (global magnitude) and evaluate,
   beside one-shot magnitude pruning of the dense model at the same ratio.

The digits ship inside scikit-learn's wheel: nothing is downloaded.

  python examples/demo_digits.py [--compression 10] [--gsm-steps 3000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np
import optax
from sklearn.datasets import load_digits

import optax_gsm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples.common.models import MLP, accuracy  # pylint: disable=wrong-import-position


def load_data(seed: int = 0):
  """Digits scaled to [0, 1], split 80/20 with a fixed permutation."""
  digits = load_digits()
  x = (digits.images / 16.0).astype(np.float32)
  y = digits.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(x))
  split = int(0.8 * len(x))
  train, test = order[:split], order[split:]
  return (x[train], y[train]), (x[test], y[test])


def train(model, params, opt, data, steps, batch_size, label, seed=0):
  """Runs `steps` jitted SGD steps on random minibatches, printing progress."""
  x, y = data
  state = opt.init(params)

  @jax.jit
  def step(params, state, xb, yb):
    def loss_fn(p):
      logits = model.apply(p, xb)
      return optax.losses.softmax_cross_entropy_with_integer_labels(
          logits, yb).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  rng = np.random.default_rng(seed)
  start = time.perf_counter()
  for i in range(1, steps + 1):
    idx = rng.integers(0, len(x), batch_size)
    params, state, loss = step(params, state, x[idx], y[idx])
    if i % max(1, steps // 5) == 0 or i == steps:
      print(f"  [{label}] step {i:5d}/{steps}  loss {float(loss):.4f}  "
            f"({time.perf_counter() - start:.1f}s)", flush=True)
  return params, state


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--compression", type=float, default=10.0)
  parser.add_argument("--dense-steps", type=int, default=1500)
  parser.add_argument("--gsm-steps", type=int, default=3000)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  train_data, (x_test, y_test) = load_data(args.seed)
  model = MLP((256, 128, 10))
  params = model.init(jax.random.key(args.seed), train_data[0][:1])
  evaluate = lambda p: float(accuracy(model.apply(p, x_test), y_test))

  print(f"1/3 dense training: {len(train_data[0])} digits, momentum SGD")
  dense_opt = optax.chain(optax.add_decayed_weights(5e-4),
                          optax.sgd(0.05, momentum=0.9))
  dense, _ = train(model, params, dense_opt, train_data, args.dense_steps,
                   args.batch_size, "dense", args.seed)

  print(f"2/3 GSM training at {args.compression:g}x (momentum 0.99)")
  gsm_opt = optax_gsm.gsm_sgd(0.05, compression=args.compression,
                              momentum=0.99, weight_decay=5e-4)
  trained, gsm_state = train(model, dense, gsm_opt, train_data,
                             args.gsm_steps, args.batch_size, "gsm", args.seed)
  active = optax_gsm.sparsity_report(dense)  # for the pool's total size
  print(f"  active weights in the last step: "
        f"{sum(int(a) for a in jax.tree.leaves(gsm_state[0].active)):,} of "
        f"{active.total:,}")

  print("3/3 hard prune (global magnitude, no fine-tuning)")
  gsm_pruned, masks = optax_gsm.prune(trained, compression=args.compression)
  magnitude_pruned, _ = optax_gsm.prune(dense, compression=args.compression)

  rows = [
      ("dense", evaluate(dense)),
      (f"one-shot magnitude {args.compression:g}x", evaluate(magnitude_pruned)),
      (f"GSM {args.compression:g}x, before hard prune", evaluate(trained)),
      (f"GSM {args.compression:g}x, hard-pruned", evaluate(gsm_pruned)),
  ]
  width = max(len(name) for name, _ in rows)
  print(f"\n{'model'.ljust(width)}  test accuracy")
  for name, acc in rows:
    print(f"{name.ljust(width)}  {100 * acc:6.2f}%")
  print("\nPer-layer sparsity of the GSM-pruned model:")
  print(optax_gsm.sparsity_report(masks))


if __name__ == "__main__":
  main()
