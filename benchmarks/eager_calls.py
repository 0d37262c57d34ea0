"""Eager (un-jitted) calls: seconds per identical call and XLA compilations.

Every user calls ``optax_gsm.prune`` once, eagerly, and a first look at an
optimizer often runs its ``update`` eagerly too. A ``lax.cond`` whose
branches are fresh closures, or a selection dispatched op by op, is traced
and compiled again on every such call. This script times the first call and
the mean of the next ``--repeats`` identical calls on LeNet-300-100's
shapes (266,610 params, 266,200 pooled), and counts the compilations of the
repeated calls (``jax.log_compiles``).

  python benchmarks/eager_calls.py --repeats 5
"""

from __future__ import annotations

import argparse
import logging
import time

import jax
import jax.numpy as jnp
import optax

import optax_gsm


class _Counter(logging.Handler):
  def __init__(self):
    super().__init__()
    self.count = 0

  def emit(self, record):
    if "Compiling" in record.getMessage():
      self.count += 1


def _params(seed: int = 0) -> dict:
  keys = jax.random.split(jax.random.key(seed), 3)
  sizes = [(784, 300), (300, 100), (100, 10)]
  return {f"Dense_{i}": {"kernel": jax.random.normal(k, s) * 0.05,
                         "bias": jnp.zeros(s[1])}
          for i, (k, s) in enumerate(zip(keys, sizes))}


def _time(fn, repeats: int) -> tuple[float, float, int]:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  counter = _Counter()
  logger = logging.getLogger("jax")
  logger.addHandler(counter)
  try:
    with jax.log_compiles(True):
      start = time.perf_counter()
      for _ in range(repeats):
        jax.block_until_ready(fn())
      again = (time.perf_counter() - start) / repeats
  finally:
    logger.removeHandler(counter)
  return first, again, counter.count


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  params = _params()
  grads = _params(1)
  cases = {
      "prune(params, compression=10)":
          lambda: optax_gsm.prune(params, compression=10),
  }
  for name, tx in [
      ("gsm_sgd(0.1, 10, prune_step=5).update",
       optax_gsm.gsm_sgd(0.1, compression=10, prune_step=5)),
      ("gsm(10).update", optax_gsm.gsm(compression=10)),
      ("hard_prune_at(5, 10).update", optax_gsm.hard_prune_at(5, 10)),
      ("gmp(0.1, 0, 100, 10).update", optax_gsm.gmp(0.1, 0, 100, 10)),
      ("weightmom(0.1, 0, 100, 10).update",
       optax_gsm.weightmom(0.1, 0, 100, 10)),
  ]:
    state = tx.init(params)
    cases[name] = (lambda tx=tx, state=state:
                   tx.update(grads, state, params)[0])
  print(f"jax {jax.__version__}, optax {optax.__version__}, "
        f"{jax.devices()[0].platform}, {args.repeats} repeats")
  print(f"{'call':40s} {'first s':>8s} {'next s':>8s} {'compiles':>9s}")
  for name, fn in cases.items():
    first, again, compiles = _time(fn, args.repeats)
    print(f"{name:40s} {first:8.3f} {again:8.3f} "
          f"{compiles / args.repeats:9.1f}")


if __name__ == "__main__":
  main()
