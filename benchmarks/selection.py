"""Global top-Q selection: mask time, gsm_sgd update time and memory.

For model-shaped pytrees (ResNet-50 leaf sizes at 1M, 10M and 25M
parameters, a GPT-style transformer at 110M) and densities 1-50%, times

* the mask alone (``top_k_masks`` on the Taylor scores of the pool),
* the whole ``gsm_sgd`` update (score, select, mask, decay, momentum),
* the ``optax.sgd(momentum=0.9)`` update,

for each selection method, interleaved in one run (median of the repeats
after a warm-up), and the scratch memory XLA allocates for each update.
``radix_count`` (the scatter-free compare-and-count select, the default on
GPU and TPU) is timed beside ``histogram`` (the CPU default); each of its
passes reads the 4-byte keys once (``bytes_per_pass``), 8 passes at b = 4
plus ``ceil(log2 N / 4)`` index passes when ties at the threshold must be
broken, so its accelerator cost is about passes x bytes_per_pass / bandwidth.
The ``top_k``/``sort`` references are skipped above ``--reference-max``
parameters (25M by default): they are full sorts, seconds per call.

  python benchmarks/selection.py            # full run (~45 min, 2 busy cores)
  python benchmarks/selection.py --models 25M 110M --ref-densities 0.2
  python benchmarks/selection.py --quick    # smoke run (~1 min)

Results are written to benchmarks/results/ after every record.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=wrong-import-position
import optax_gsm  # pylint: disable=wrong-import-position
from optax_gsm import _scores  # pylint: disable=wrong-import-position
from optax_gsm import _pool  # pylint: disable=wrong-import-position

METHODS = ("histogram", "radix_count", "top_k", "sort")


def bench_model(name: str, shapes: common.Shapes, densities: list[float],
                repeats: int, ref_repeats: int, reference_max: int,
                ref_densities: list[float] | None,
                on_record: Callable[[dict], None]) -> list[dict]:
  """All densities and methods for one pytree; one record per density."""
  n_params = common.num_params(shapes)
  params = common.random_tree(shapes, seed=0)
  grads = common.random_tree(shapes, seed=1, scale=1e-2)
  flags = _pool.pool_flags(None, params)
  scores = jax.jit(lambda g, p: _scores.pool_scores("taylor", g, p, flags))(
      grads, params)
  pool = sum(s.size for s in scores)
  sgd = optax.sgd(0.1, momentum=0.9)
  sgd_state = sgd.init(params)
  sgd_update = jax.jit(sgd.update).lower(grads, sgd_state, params).compile()
  sgd_temp = common.temp_bytes(sgd_update)
  records = []
  for density in densities:
    k = _pool.num_kept(pool, None, density)
    with_refs = n_params <= reference_max and (
        ref_densities is None or density in ref_densities)
    methods = METHODS if with_refs else ("histogram", "radix_count")
    fns, temps = {}, {}
    fns["sgd"] = lambda: sgd_update(grads, sgd_state, params)
    for method in methods:
      opt = optax_gsm.gsm_sgd(0.1, density=density, momentum=0.9,
                              selection=method)
      state = opt.init(params)
      # Compiled once, used both for the memory analysis and the timing.
      update = jax.jit(opt.update).lower(grads, state, params).compile()
      mask = jax.jit(lambda s, m=method: optax_gsm.top_k_masks(
          s, k, selection=m)).lower(scores).compile()
      temps[f"update_{method}"] = common.temp_bytes(update)
      temps[f"mask_{method}"] = common.temp_bytes(mask)
      fns[f"mask_{method}"] = lambda f=mask: f(scores)
      fns[f"update_{method}"] = (
          lambda f=update, s=state: f(grads, s, params))
    common.log(f"{name}: density {density:.0%}, k={k}, timing "
               f"{', '.join(fns)}")
    fast = {n: f for n, f in fns.items() if not n.endswith(("top_k", "sort"))}
    slow = {n: f for n, f in fns.items() if n not in fast}
    times = common.time_interleaved(fast, repeats)
    if slow:
      slow["sgd_ref_run"] = fns["sgd"]
      times.update(common.time_interleaved(slow, ref_repeats))
    ms = {n: 1e3 * t for n, t in times.items()}
    # The masks agree bit for bit (tests/test_selection.py); check it here too.
    if "mask_top_k" in fns:
      same = all(bool(jnp.array_equal(a, b)) for a, b in zip(
          fns["mask_histogram"](), fns["mask_top_k"]()))
    else:
      same = None
    record = {
        "model": name, "params": n_params, "pool": pool, "density": density,
        "k": k, "ms": ms, "temp_bytes": temps, "sgd_temp_bytes": sgd_temp,
        "update_over_sgd": ms["update_histogram"] / ms["sgd"],
        "mask_equal_top_k": same,
        "scratch_bytes_per_param": (
            (temps["update_histogram"] - sgd_temp) / n_params
            if temps["update_histogram"] is not None and sgd_temp is not None
            else None),
        "ns_per_param_update": 1e6 * ms["update_histogram"] / n_params,
        "bytes_per_pass": 4 * pool,
        "radix_count_over_histogram_mask": (ms["mask_radix_count"] /
                                            ms["mask_histogram"]),
    }
    for ref in ("top_k", "sort"):
      if f"update_{ref}" in ms:
        record[f"{ref}_speedup_update"] = (ms[f"update_{ref}"] /
                                           ms["update_histogram"])
        record[f"{ref}_speedup_mask"] = (ms[f"mask_{ref}"] /
                                         ms["mask_histogram"])
    records.append(record)
    on_record(record)
    refs = "".join(
        f", {r} {ms[f'update_{r}']:.0f} ms ({record[f'{r}_speedup_update']:.0f}x)"
        for r in ("top_k", "sort") if f"update_{r}" in ms)
    common.log(
        f"  radix_count: mask {ms['mask_radix_count']:.1f} ms, update "
        f"{ms['update_radix_count']:.1f} ms")
    common.log(
        f"  mask {ms['mask_histogram']:.1f} ms, gsm update "
        f"{ms['update_histogram']:.1f} ms, sgd {ms['sgd']:.1f} ms, ratio "
        f"{record['update_over_sgd']:.2f}, scratch "
        f"{record['scratch_bytes_per_param']:.2f} B/param{refs}")
  return records


def markdown(records: list[dict]) -> str:
  lines = [
      "| model | params | density | mask ms | gsm update ms | sgd ms | "
      "gsm/sgd | radix_count mask ms | radix_count update ms | "
      "top_k update ms | speedup | sort update ms | speedup | "
      "scratch B/param |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in records:
    ms = r["ms"]
    def ref(name):
      if f"update_{name}" not in ms:
        return "skipped | —"
      return f"{ms[f'update_{name}']:.0f} | {r[f'{name}_speedup_update']:.0f}x"
    lines.append(
        f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['density']:.0%} | "
        f"{ms['mask_histogram']:.1f} | {ms['update_histogram']:.1f} | "
        f"{ms['sgd']:.1f} | {r['update_over_sgd']:.2f} | "
        f"{ms['mask_radix_count']:.1f} | {ms['update_radix_count']:.1f} | "
        f"{ref('top_k')} | "
        f"{ref('sort')} | {r['scratch_bytes_per_param']:.2f} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="tiny smoke run: 0.1M parameters, two densities")
  parser.add_argument("--models", nargs="*", default=None,
                      help=f"substrings of {list(common.MODELS)}")
  parser.add_argument("--densities", nargs="*", type=float,
                      default=[0.01, 0.1, 0.2, 0.5])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--ref-repeats", type=int, default=3)
  parser.add_argument("--reference-max", type=float, default=26e6,
                      help="skip top_k/sort above this many parameters")
  parser.add_argument("--ref-densities", nargs="*", type=float, default=None,
                      help="run top_k/sort only at these densities (all by "
                      "default)")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  models = [m for m in common.MODELS
            if not args.models or any(s in m for s in args.models)]
  densities = args.densities
  if args.quick:  # a 0.1M ResNet-50-shaped pool, two densities
    common.MODELS["resnet50_x0.05 (quick)"] = lambda: common.resnet50_shapes(
        0.05, num_classes=10)
    models, densities = ["resnet50_x0.05 (quick)"], [0.1, 0.5]
    args.repeats, args.ref_repeats = 3, 2
  out = args.out or os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results",
      "selection_quick.json" if args.quick else "selection.json")
  common.log(f"machine: {common.machine()}")
  records: list[dict] = []
  os.makedirs(os.path.dirname(out), exist_ok=True)

  def save(record: dict) -> None:  # after every record: partial runs count
    records.append(record)
    with open(out, "w") as f:
      json.dump({"command": " ".join(["python"] + sys.argv),
                 "machine": common.machine(),
                 "peak_rss_bytes": common.peak_rss_bytes(),
                 "records": records}, f, indent=1)

  for name in models:
    shapes = common.MODELS[name]()
    common.log(f"{name}: {common.num_params(shapes):,} parameters")
    bench_model(name, shapes, densities, args.repeats, args.ref_repeats,
                int(args.reference_max), args.ref_densities, save)
  common.log(f"wrote {out}")
  print(markdown(records))
  hist = [r for r in records if abs(r["density"] - 0.2) < 1e-9]
  if len(hist) > 1:
    print("\nlinearity (density 20%): ns/param of the gsm update: " + ", ".join(
        f"{r['params'] / 1e6:.0f}M: {r['ns_per_param_update']:.2f}"
        for r in hist))


if __name__ == "__main__":
  main()
