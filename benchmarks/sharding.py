"""Global top-k selection time against device count, at a fixed pool size.

The pool (four kernels) is sharded by rows over a 1-D mesh of 1, 2, 4 and 8
fake CPU devices, and one jitted ``top_k_masks`` call is timed per method:
``"histogram"`` works on each shard and sums histograms across devices,
``"top_k"`` concatenates the pool (so XLA gathers it). The collectives in the
compiled program are counted too.

The fake devices are threads of one process sharing this machine's cores
(2 here), so more devices add partitioning and communication work without
adding compute: this measures overhead, not a speed-up.

Run: ``nice -n 5 python benchmarks/sharding.py [--sizes 1048576 4194304]``
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import pathlib
import platform
import re
import sys
import time

import jax

jax.config.update("jax_num_cpu_devices", 8)  # before any JAX computation

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import optax_gsm

_COLLECTIVE = re.compile(
    r"\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)"
    r"(?:-start)?\(")


def _pool(total: int, devices: int) -> dict[str, jax.Array]:
  """Four kernels of ``total / 4`` entries each, rows sharded over devices."""
  mesh = jax.make_mesh((devices,), ("x",), axis_types=(AxisType.Auto,),
                       devices=jax.devices()[:devices])
  rows = 1024
  cols = total // 4 // rows
  keys = jax.random.split(jax.random.key(0), 4)
  sharding = NamedSharding(mesh, P("x", None))
  return {f"kernel_{i}": jax.device_put(
      jnp.abs(jax.random.normal(key, (rows, cols))), sharding)
          for i, key in enumerate(keys)}


def _time(fn, args, repeats: int) -> tuple[float, float]:
  """(median, min) wall seconds of ``fn(*args)`` after one warm-up call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times)), float(np.min(times))


def run(sizes: list[int], device_counts: list[int], methods: list[str],
        compression: float, repeats: int, reference_max: int) -> list[dict]:
  rows = []
  for total in sizes:
    k = int(total / compression)
    reference = None
    for devices in device_counts:
      scores = _pool(total, devices)
      for method in methods:
        if method != "histogram" and total > reference_max:
          continue
        fn = jax.jit(lambda s, method=method: optax_gsm.top_k_masks(
            s, k, selection=method))
        hlo = fn.lower(scores).compile().as_text()
        ops = collections.Counter(_COLLECTIVE.findall(hlo))
        median, best = _time(fn, (scores,), repeats)
        masks = fn(scores)
        kept = sum(int(jnp.sum(m)) for m in jax.tree.leaves(masks))
        flat = np.concatenate([np.asarray(m).ravel()
                               for m in jax.tree.leaves(masks)])
        if reference is None:
          reference = flat
        row = dict(total=total, k=k, devices=devices, method=method,
                   median_ms=1e3 * median, min_ms=1e3 * best, kept=kept,
                   same_mask_as_first=bool(np.array_equal(flat, reference)),
                   collectives=dict(ops))
        rows.append(row)
        print(f"N={total:>9,}  devices={devices}  {method:<9}  "
              f"median {row['median_ms']:9.2f} ms  min {row['min_ms']:9.2f} ms"
              f"  collectives {dict(ops)}", flush=True)
  return rows


def table(rows: list[dict]) -> str:
  """A Markdown table: one line per pool size, method and device count."""
  lines = ["| pool N | method | devices | median ms | min ms | collectives "
           "in the compiled step |", "|---:|---|---:|---:|---:|---|"]
  for r in rows:
    ops = ", ".join(f"{n} {op}" for op, n in sorted(r["collectives"].items()))
    lines.append(f"| {r['total']:,} | {r['method']} | {r['devices']} | "
                 f"{r['median_ms']:.1f} | {r['min_ms']:.1f} | {ops or 'none'} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", type=int, nargs="+",
                      default=[1 << 20, 1 << 22])
  parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
  parser.add_argument("--methods", nargs="+", default=["histogram", "top_k"])
  parser.add_argument("--compression", type=float, default=10.0)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--reference-max", type=int, default=1 << 20,
                      help="run methods other than histogram up to this N")
  parser.add_argument("--out", default=str(
      pathlib.Path(__file__).parent / "results" / "sharding.json"))
  args = parser.parse_args()
  rows = run(args.sizes, args.devices, args.methods, args.compression,
             args.repeats, args.reference_max)
  assert all(r["same_mask_as_first"] for r in rows), "masks differ"
  result = dict(
      benchmark="sharding", jax=jax.__version__, backend=jax.default_backend(),
      cpu_cores=os.cpu_count(), machine=platform.machine(),
      note=("fake CPU devices in one process sharing the cores; "
            "timings measure overhead, not a speed-up"),
      selection_sha256=hashlib.sha256(pathlib.Path(
          optax_gsm._selection.__file__).read_bytes()).hexdigest()[:16],
      compression=args.compression, repeats=args.repeats,
      command="python benchmarks/sharding.py " + " ".join(sys.argv[1:]),
      rows=rows)
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  print("\n" + table(rows))
  print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()
