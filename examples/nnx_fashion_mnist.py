"""GSM with Flax NNX: prune an MLP on Fashion-MNIST through nnx.Optimizer.

1. Train a dense MLP (784-300-100-10) for an epoch with momentum SGD.
2. Go on with ``optax_gsm.gsm_sgd`` in ``nnx.Optimizer``: every step only the
   1/C of the weights with the largest |grad * weight| over the whole model
   get their gradient. The weight decay comes from
   ``optax_gsm.weight_decay_for``, so that a weight passive the whole phase
   shrinks by e^-6; ``optax_gsm.gsm_metrics`` (active density per layer, the
   share of the squared norm a prune would remove now) is logged as it goes.
3. Hard-prune to exactly 1/C of the weights, print the per-layer table and
   the accuracies, and save a plot of accuracy and prune share.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist``
(/usr/share/datasets/fashion-mnist); without it, scikit-learn's digits.
``--quick`` runs a few seconds on a subset (a smoke test).

  python examples/nnx_fashion_mnist.py [--compression 30] [--out /tmp]
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import jax
import numpy as np
import optax
from flax import nnx

import optax_gsm
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples.common import datasets  # pylint: disable=wrong-import-position

try:
  from tqdm import tqdm
except ImportError:  # tqdm is in the "examples" extra; plain prints without
  tqdm = None


class MLP(nnx.Module):
  """A multilayer perceptron: ReLU between ``nnx.Linear`` layers."""

  def __init__(self, sizes: tuple[int, ...], rngs: nnx.Rngs):
    self.l1 = nnx.Linear(sizes[0], sizes[1], rngs=rngs)
    self.l2 = nnx.Linear(sizes[1], sizes[2], rngs=rngs)
    self.l3 = nnx.Linear(sizes[2], sizes[3], rngs=rngs)

  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(self.l1(x))
    return self.l3(jax.nn.relu(self.l2(x)))


def load(data_dir: str, quick: bool):
  """(x_train, y_train, x_test, y_test, name), images standardized."""
  try:
    train, test = datasets.load_idx_dataset(data_dir)
    name = "Fashion-MNIST"
  except FileNotFoundError:
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    digits = load_digits()
    images = (digits.images * (255 / 16)).astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    cut = int(0.8 * len(images))
    train = datasets.Split(images[order[:cut]], digits.target[order[:cut]])
    test = datasets.Split(images[order[cut:]], digits.target[order[cut:]])
    name = "digits"
  if quick:
    train = datasets.Split(train.images[:2000], train.labels[:2000])
    test = datasets.Split(test.images[:500], test.labels[:500])
  mean, std = train.images.mean() / 255, train.images.std() / 255
  return (datasets.normalize(train.images, mean, std), train.labels,
          datasets.normalize(test.images, mean, std), test.labels, name)


def loss_fn(model, x, y):
  return optax.losses.softmax_cross_entropy_with_integer_labels(
      model(x), y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
  loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def accuracy(model, x, y):
  return (model(x).argmax(-1) == y).mean()


def fit(model, optimizer, data, steps, args, label, log=None):
  """``steps`` minibatch steps with a progress bar; ``log(step)`` every N."""
  x, y = data
  rng = np.random.default_rng(args.seed)
  bar = tqdm(range(1, steps + 1), desc=label, leave=False,
             disable=args.quiet) if tqdm else range(1, steps + 1)
  write = tqdm.write if tqdm else print
  for step in bar:
    idx = rng.integers(0, len(y), args.batch_size)
    loss = train_step(model, optimizer, x[idx], y[idx])
    if step % args.log_every == 0 or step == steps:
      line = log(step) if log else {}
      line = {"loss": round(float(loss), 4), **line}
      if tqdm:
        bar.set_postfix(loss=line["loss"])
      write(f"[{label}] step {step}/{steps} " + ", ".join(
          f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
          for k, v in line.items()))


def plot(history, compression, pruned_acc, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  steps = [h["step"] for h in history]
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
  top.plot(steps, [100 * h["test_acc"] for h in history], marker=".",
           label="during GSM")
  top.plot(steps[-1:], [100 * pruned_acc], "r*", markersize=10,
           label="hard-pruned")
  top.legend(loc="lower right")
  top.set_ylabel("test accuracy (%)")
  top.set_title(f"GSM {compression:g}x through nnx.Optimizer")
  bottom.semilogy(steps, [max(h["gsm/prune_share"], 1e-12) for h in history],
                  marker=".")
  bottom.set_ylabel("prune share")
  bottom.set_xlabel("GSM step")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", default=datasets.FASHION_MNIST_DIR)
  parser.add_argument("--compression", type=float, default=30.0)
  parser.add_argument("--dense-epochs", type=float, default=1.0)
  parser.add_argument("--epochs", type=float, default=3.0, help="of GSM")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--learning-rate", type=float, default=0.02)
  parser.add_argument("--momentum", type=float, default=0.98)
  parser.add_argument("--exponent", type=float, default=6.0,
                      help="passive weights shrink by e^-exponent")
  parser.add_argument("--log-every", type=int, default=100)
  parser.add_argument("--out", default="/tmp", help="folder for the PNG")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--quick", action="store_true", help="seconds, subset")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  args = parser.parse_args(argv)
  start = time.perf_counter()

  x_train, y_train, x_test, y_test, name = load(args.data_dir, args.quick)
  per_epoch = len(y_train) // args.batch_size
  dense_steps = max(1, int(args.dense_epochs * per_epoch))
  gsm_steps = max(1, int(args.epochs * per_epoch))
  if args.quick:
    dense_steps, gsm_steps, args.log_every = 20, 30, 10
    args.momentum, args.exponent = 0.9, 1.0  # what 30 steps can reach
  pixels = int(np.prod(x_train.shape[1:]))
  model = MLP((pixels, 300, 100, 10), nnx.Rngs(args.seed))
  test_acc = lambda: float(accuracy(model, x_test, y_test))
  print(f"{name}: {len(y_train)} train, {len(y_test)} test images; "
        f"{dense_steps} dense + {gsm_steps} GSM steps of {args.batch_size}")

  dense_opt = nnx.Optimizer(model, optax.chain(
      optax.add_decayed_weights(5e-4), optax.sgd(0.05, momentum=0.9)),
                            wrt=nnx.Param)
  fit(model, dense_opt, (x_train, y_train), dense_steps, args, "dense")
  dense = nnx.clone(model)
  dense_acc = test_acc()

  # Last fifth at a tenth of the rate; the weight decay from the schedule.
  lr = optax.piecewise_constant_schedule(
      args.learning_rate, {int(0.8 * gsm_steps): 0.1})
  wd = optax_gsm.weight_decay_for(lr, gsm_steps, momentum=args.momentum,
                                  exponent=args.exponent)
  print(f"GSM {args.compression:g}x: lr {args.learning_rate:g} (x0.1 for the "
        f"last 20%), momentum {args.momentum:g}, weight decay {wd:.3g} "
        f"(weight_decay_for: passive weights shrink by e^-{args.exponent:g})")
  optimizer = nnx.Optimizer(model, optax_gsm.gsm_sgd(
      lr, compression=args.compression, momentum=args.momentum,
      weight_decay=wd), wrt=nnx.Param)
  history = []

  def log(step):
    metrics = optax_gsm.gsm_metrics(optimizer, nnx.state(model, nnx.Param),
                                    compression=args.compression)
    metrics["test_acc"] = test_acc()
    history.append({"step": step, **metrics})
    return {k: v for k, v in metrics.items() if k != "gsm/step"}

  fit(model, optimizer, (x_train, y_train), gsm_steps, args, "gsm", log)
  before = test_acc()
  # prune is jit-able: compiled once, the selection runs as one program.
  prune = jax.jit(functools.partial(optax_gsm.prune,
                                    compression=args.compression))
  pruned, masks = prune(nnx.state(model, nnx.Param))
  nnx.update(model, pruned)
  nnx.update(dense, prune(nnx.state(dense, nnx.Param))[0])

  path = os.path.join(args.out, "nnx_fashion_mnist.png")
  os.makedirs(args.out, exist_ok=True)
  rows = [("dense", dense_acc),
          (f"one-shot magnitude {args.compression:g}x",
           float(accuracy(dense, x_test, y_test))),
          (f"GSM {args.compression:g}x, before hard prune", before),
          (f"GSM {args.compression:g}x, hard-pruned", test_acc())]
  plot(history, args.compression, rows[-1][1], path)
  print("\nPer-layer sparsity of the GSM-pruned model:")
  print(optax_gsm.sparsity_report(masks))
  width = max(len(n) for n, _ in rows)
  print(f"\n{'model'.ljust(width)}  test accuracy")
  for n, acc in rows:
    print(f"{n.ljust(width)}  {100 * acc:6.2f}%")
  print(f"\nplot: {path}  ({time.perf_counter() - start:.0f} s)")
  return dict(rows)


if __name__ == "__main__":
  main()
