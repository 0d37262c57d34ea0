"""Full training step (forward, backward, update): gsm_sgd vs momentum SGD.

Two Flax models: LeNet-5 (``examples.common.models.LeNet5``, 431K parameters, 28x28
inputs) and a small CIFAR-style ResNet defined here (ResNet-20: 3 stages of 3
basic blocks, 16/32/64 channels, 0.27M parameters, 32x32x3 inputs). Each step
is one jitted function; the two optimizers are timed interleaved in one run
(median of the repeats after a warm-up), on random data.

  python benchmarks/train_step.py            # full run (~3 min on 2 cores)
  python benchmarks/train_step.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=wrong-import-position
import optax_gsm  # pylint: disable=wrong-import-position
from examples.common import models  # pylint: disable=wrong-import-position


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a shortcut (projection when shapes change)."""
  channels: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.Conv(self.channels, (3, 3), (self.stride, self.stride),
                use_bias=False)(x)
    y = nn.relu(nn.LayerNorm()(y))
    y = nn.Conv(self.channels, (3, 3), use_bias=False)(y)
    y = nn.LayerNorm()(y)
    if x.shape[-1] != self.channels or self.stride != 1:
      x = nn.Conv(self.channels, (1, 1), (self.stride, self.stride),
                  use_bias=False)(x)
    return nn.relu(x + y)


class SmallResNet(nn.Module):
  """ResNet-20 for 32x32 images (LayerNorm instead of BatchNorm: no state)."""
  stages: Sequence[int] = (16, 32, 64)
  blocks: int = 3
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.relu(nn.Conv(self.stages[0], (3, 3), use_bias=False)(x))
    for i, channels in enumerate(self.stages):
      for j in range(self.blocks):
        x = BasicBlock(channels, 2 if (i > 0 and j == 0) else 1)(x)
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


def make_step(model: nn.Module, opt: optax.GradientTransformation):
  def loss_fn(params, x, y):
    logits = model.apply(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss
  return step


def bench(name: str, model: nn.Module, input_shape: tuple[int, ...],
          batch: int, density: float, repeats: int) -> dict:
  key_x, key_y, key_p = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(key_x, (batch,) + input_shape)
  y = jax.random.randint(key_y, (batch,), 0, 10)
  params = model.init(key_p, x[:1])
  n_params = sum(p.size for p in jax.tree.leaves(params))
  opts = {
      "sgd_momentum": optax.sgd(0.01, momentum=0.9),
      "gsm_sgd": optax_gsm.gsm_sgd(0.01, density=density, momentum=0.9),
  }
  fns = {}
  for opt_name, opt in opts.items():
    step = make_step(model, opt)
    state = opt.init(params)
    fns[opt_name] = lambda step=step, state=state: step(params, state, x, y)
  common.log(f"{name}: {n_params:,} parameters, batch {batch}, density "
             f"{density:.0%}: timing {', '.join(fns)}")
  times = common.time_interleaved(fns, repeats, warmup=2)
  ms = {n: 1e3 * t for n, t in times.items()}
  record = {"model": name, "params": n_params, "batch": batch,
            "density": density, "ms": ms,
            "overhead": ms["gsm_sgd"] / ms["sgd_momentum"] - 1.0}
  common.log(f"  sgd {ms['sgd_momentum']:.2f} ms, gsm_sgd {ms['gsm_sgd']:.2f}"
             f" ms, overhead {record['overhead']:+.1%}")
  return record


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="smoke run")
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--density", type=float, default=0.2)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  repeats = 3 if args.quick else args.repeats
  lenet5_batches = (16,) if args.quick else (16, 128)
  resnet_batch = 16 if args.quick else 128
  out = args.out or os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results",
      "train_step_quick.json" if args.quick else "train_step.json")
  common.log(f"machine: {common.machine()}")
  records = [
      bench("LeNet-5", models.LeNet5(), (28, 28, 1), batch, args.density,
            repeats) for batch in lenet5_batches]
  records.append(bench("ResNet-20 (small)", SmallResNet(), (32, 32, 3),
                       resnet_batch, args.density, repeats))
  with open(out, "w") as f:
    json.dump({"command": " ".join(["python"] + sys.argv),
               "machine": common.machine(), "records": records}, f, indent=1)
  common.log(f"wrote {out}")
  print("| model | params | batch | sgd(momentum) step ms | gsm_sgd step ms "
        "| overhead |")
  print("|---|---|---|---|---|---|")
  for r in records:
    print(f"| {r['model']} | {r['params'] / 1e3:.0f}K | {r['batch']} | "
          f"{r['ms']['sgd_momentum']:.2f} | {r['ms']['gsm_sgd']:.2f} | "
          f"{r['overhead']:+.1%} |")


if __name__ == "__main__":
  main()
