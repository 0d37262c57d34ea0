"""Structured (filter) pruning then shrinking: FLOPs and CPU latency.

For LeNet-300-100 and LeNet-5 (``examples.common.models``) at several filter
densities: ``structured_prune`` (Taylor scores |g w| of one random batch's
gradient, summed per filter, layers L2-normalised; the output layer is kept
whole), then ``shrink`` to a smaller dense model. Reports the logits'
largest difference between the pruned and the shrunk model, parameter
counts, FLOPs from XLA's cost analysis of the compiled forward pass, and the
median latency of the jitted forward pass (batch 1 and 256, calls
interleaved). The weights are at initialization: this measures speed, not
accuracy.

Run ``python benchmarks/structured.py`` (``--quick`` for fewer repeats);
writes ``benchmarks/results/structured.json``.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  pylint: disable=wrong-import-position

import optax_gsm  # noqa: E402  pylint: disable=wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples.common import models  # noqa: E402  pylint: disable=wrong-import-position

MODELS = {
    "lenet_300_100": (models.lenet_300_100(), (784,), "Dense_2"),
    "lenet5": (models.LeNet5(), (28, 28, 1), "Dense_1"),
}


def flops(apply, params, x) -> float:
  """FLOPs of the compiled forward pass, from XLA's cost analysis."""
  cost = jax.jit(apply).lower(params, x).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost["flops"])


def num_params(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))


def pool_without_output(params, output):
  return {"params": {name: {k: (k == "kernel" and name != output)
                            for k in layer}
                     for name, layer in params["params"].items()}}


def run(densities, repeats):
  rows = []
  for name, (model, in_shape, output) in MODELS.items():
    key = jax.random.key(0)
    x1 = jax.random.normal(key, (1, *in_shape))
    x256 = jax.random.normal(key, (256, *in_shape))
    params = model.init(jax.random.key(1), x1)
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, x256) ** 2))(params)
    pool = pool_without_output(params, output)
    dense_apply = jax.jit(model.apply)
    base = {"flops_b1": flops(model.apply, params, x1),
            "params": num_params(params)}
    for density in densities:
      pruned, _ = optax_gsm.structured_prune(
          params, density=density, prunable=pool, criterion="taylor",
          grads=grads, normalize_layers=True)
      small, small_params = optax_gsm.shrink(model, pruned)
      small_apply = jax.jit(small.apply)
      diff = float(jnp.max(jnp.abs(small_apply(small_params, x256)
                                   - dense_apply(pruned, x256))))
      times = common.time_interleaved({
          "dense_b1": lambda: dense_apply(params, x1),
          "small_b1": lambda: small_apply(small_params, x1),
          "dense_b256": lambda: dense_apply(params, x256),
          "small_b256": lambda: small_apply(small_params, x256),
      }, repeats=repeats, warmup=2)
      widths = (small.features[:-1] if isinstance(small, models.MLP)
                else small.widths)
      row = {
          "model": name, "filter_density": density, "widths": list(widths),
          "params_before": base["params"], "params_after": num_params(
              small_params),
          "flops_b1_before": base["flops_b1"],
          "flops_b1_after": flops(small.apply, small_params, x1),
          "max_abs_logit_diff": diff,
          **{f"ms_{k}": 1e3 * v for k, v in times.items()},
      }
      rows.append(row)
      common.log(f"{name} d={density}: widths {list(widths)}, "
                 f"FLOPs {row['flops_b1_before']:.3g} -> "
                 f"{row['flops_b1_after']:.3g}, logit diff {diff:.2e}, "
                 f"b256 {row['ms_dense_b256']:.3f} -> "
                 f"{row['ms_small_b256']:.3f} ms")
  return rows


def table(rows) -> str:
  head = ("model", "filters kept", "widths", "params", "FLOPs (b=1)",
          "ms b=1", "ms b=256", "max abs logit diff")
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    lines.append("| " + " | ".join([
        r["model"], f"{r['filter_density']:.0%}", str(r["widths"]),
        f"{r['params_before']:,} -> {r['params_after']:,}",
        f"{r['flops_b1_before']:.3g} -> {r['flops_b1_after']:.3g} "
        f"({r['flops_b1_before'] / r['flops_b1_after']:.1f}x)",
        f"{r['ms_dense_b1']:.3f} -> {r['ms_small_b1']:.3f}",
        f"{r['ms_dense_b256']:.2f} -> {r['ms_small_b256']:.2f}",
        f"{r['max_abs_logit_diff']:.1e}"]) + " |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--out", default=os.path.join(
      os.path.dirname(__file__), "results", "structured.json"))
  args = parser.parse_args()
  densities = (0.5, 0.25) if args.quick else (0.5, 0.25, 0.1)
  repeats = 10 if args.quick else 50
  common.log(f"structured benchmark: densities {densities}, {repeats} repeats")
  rows = run(densities, repeats)
  print(table(rows))
  common.write_results(args.out, rows, repeats=repeats)


if __name__ == "__main__":
  main()
