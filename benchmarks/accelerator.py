"""One-command accelerator benchmark: selection, update, ResNet-50 step, peer.

Measures, on whatever backend JAX sees (GPU, TPU or CPU), within a time
budget (8 minutes by default; a section that would start after it is
skipped and recorded as such):

1. **Selection**: the mask of the k = 10% largest of N scores (|normal|, 10%
   exact zeros, one leaf) by each method, interleaved, N from 1M up to 1B as
   device memory allows: ``histogram`` (scatter-add), ``radix_count`` at
   b = 1, 2, 4, 8 bits per pass (compare-and-count), ``top_k`` and ``sort``
   (full sorts, up to ``--ref-max``), and ``read``: one compare-and-count
   pass over the keys, the unit of radix_count's cost. Each method's passes
   over the 4-byte keys are recorded, so ``ms / (passes * read ms)`` says how
   close to memory-bound a pass runs.
2. **Update**: ``gsm_sgd`` (histogram, radix_count and "auto") against
   ``optax.sgd(momentum=0.9)`` at 25.6M (ResNet-50 leaves), 110M (GPT-style)
   and 1B (GPT-style, d_model 2048, 20 layers) parameters.
3. **ResNet-50 training step** (synthetic data, batch 256, 224x224, bf16
   compute, float32 params): momentum SGD with and without GSM.
4. **PyTorch peer** (``benchmarks/peers.py``'s official GSM step,
   ``torch.topk`` + ``torch.optim.SGD``) at 25.6M, when torch with CUDA is
   present.

Writes ``benchmarks/results/accelerator_<backend>.json`` and ``.png`` and
prints a table with the device, versions and date.

  python benchmarks/accelerator.py            # on a GPU/TPU: the full run
  python benchmarks/accelerator.py --cpu      # modest CPU sizes (~3 min)
  python benchmarks/accelerator.py --quick    # tiny smoke run (< 60 s)
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=wrong-import-position
from examples.common import resnet50  # pylint: disable=wrong-import-position
import optax_gsm  # pylint: disable=wrong-import-position
from optax_gsm import _selection  # pylint: disable=wrong-import-position

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:
  torch = None

COUNT_BITS = (1, 2, 4, 8)
DENSITY = 0.1


class Budget:
  """Wall-clock budget: ``left()`` seconds remain of ``seconds``."""

  def __init__(self, seconds: float):
    self.end = time.monotonic() + seconds

  def left(self) -> float:
    return self.end - time.monotonic()


def device_info() -> dict[str, Any]:
  dev = jax.devices()[0]
  info = {
      "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime(
          "%Y-%m-%d %H:%M"),
      "backend": jax.default_backend(), "device": dev.device_kind,
      "device_count": jax.device_count(), "jax": jax.__version__,
      "jaxlib": getattr(jax.lib, "__version__", None) or jax.__version__,
      "optax": optax.__version__, "optax_gsm": optax_gsm.__version__,
      "python": platform.python_version(), "host_cpus": os.cpu_count(),
      "load_avg_1m": os.getloadavg()[0],
      "torch": None if torch is None else torch.__version__,
      "torch_cuda": bool(torch is not None and torch.cuda.is_available()),
  }
  try:
    info["device_memory_bytes"] = int(dev.memory_stats()["bytes_limit"])
  except Exception:  # pylint: disable=broad-except  # CPU: no stats
    info["device_memory_bytes"] = None
  return info


def passes(method: str, n: int, bits: int | None) -> int:
  """Reads of the N keys a method makes, ties excluded (one leaf)."""
  if method == "radix_count":
    return math.ceil(32 / bits) + 1  # digit passes + the mask pass
  if method == "histogram":
    return 3  # two 16-bit histograms + the mask pass
  return 1


def bench_selection(sizes: list[int], ref_max: int, bits8_max: int,
                    repeats: int, budget: Budget, log: Callable) -> list[dict]:
  rows = []
  for n in sizes:
    if budget.left() < 30:
      rows.append({"n": n, "skipped": "time budget"})
      continue
    cols = 1024 if n % 1024 == 0 else 1
    key = jax.random.key(n % 1000)
    scores = jax.jit(lambda key: jnp.abs(jax.random.normal(
        key, (n // cols, cols))) * (jax.random.uniform(key, (n // cols, cols))
                                    > 0.1), static_argnums=())(key)
    k = max(1, int(n * DENSITY))
    keys = jax.jit(_selection.ordered_key)(scores)
    fns = {"read": (jax.jit(lambda x: jnp.sum(x >= jnp.uint32(0xBF800000),
                                               dtype=jnp.uint32)), keys)}
    methods = [("histogram", None)] + [("radix_count", b) for b in COUNT_BITS
                                        if b < 8 or n <= bits8_max]
    if n <= ref_max:
      methods += [("top_k", None), ("sort", None)]
    for method, bits in methods:
      name = method if bits is None else f"{method} b={bits}"
      fns[name] = (jax.jit(lambda s, m=method, b=bits: optax_gsm.top_k_masks(
          [s], k, selection=m, bits_per_pass=b)), scores)
    compiled, errors = {}, {}
    for name, (f, x) in fns.items():
      try:  # one failing method (e.g. out of memory) must not end the run
        compiled[name] = f.lower(x).compile()
      except Exception as e:  # pylint: disable=broad-except
        errors[name] = f"{type(e).__name__}: {str(e)[:200]}"
        log(f"selection N={n:,}: {name} failed: {errors[name]}")
    calls = {name: (lambda c=c, x=fns[name][1]: c(x))
             for name, c in compiled.items()}
    times = common.time_interleaved(calls, repeats)
    # Compared on the device: no copy of a 1B mask to the host.
    first = calls["histogram"]()[0] if "histogram" in calls else None
    agree = first is not None and all(
        bool(jnp.array_equal(calls[nm]()[0], first))
        for nm in calls if nm != "read")
    ms = {name: 1e3 * t for name, t in times.items()}
    row = {"n": n, "k": k, "bytes_per_pass": 4 * n, "ms": ms,
           "masks_agree": agree, "errors": errors,
           "passes": {nm: passes(nm.split(" ")[0], n,
                                 int(nm.split("=")[1]) if "=" in nm else None)
                      for nm in ms if nm != "read"},
           "read_GBps": 4 * n / (ms["read"] * 1e6) if "read" in ms else None}
    rows.append(row)
    log(f"selection N={n:,}: " + ", ".join(
        f"{nm} {t:.2f} ms" for nm, t in ms.items()) + f"; agree={agree}")
    del scores, keys, compiled, calls
  return rows


def bench_update(models: dict[str, Any], repeats: int, budget: Budget,
                 log: Callable) -> list[dict]:
  rows = []
  for name, shapes in models.items():
    if budget.left() < 45:
      rows.append({"model": name, "skipped": "time budget"})
      continue
    params = common.random_tree(shapes, seed=0)
    grads = common.random_tree(shapes, seed=1, scale=1e-2)
    n = common.num_params(shapes)
    opts = {"sgd": optax.sgd(0.1, momentum=0.9)}
    for sel in ("auto", "histogram", "radix_count"):
      opts[f"gsm_sgd {sel}"] = optax_gsm.gsm_sgd(0.1, density=DENSITY,
                                                 momentum=0.9, selection=sel)
    calls, errors = {}, {}
    for label, opt in opts.items():
      try:
        state = opt.init(params)
        fn = jax.jit(opt.update).lower(grads, state, params).compile()
      except Exception as e:  # pylint: disable=broad-except
        errors[label] = f"{type(e).__name__}: {str(e)[:200]}"
        log(f"update {name}: {label} failed: {errors[label]}")
        continue
      calls[label] = lambda f=fn, s=state: f(grads, s, params)
    ms = {nm: 1e3 * t for nm, t in
          common.time_interleaved(calls, repeats).items()}
    row = {"model": name, "params": n, "ms": ms, "errors": errors,
           "gsm_over_sgd": {nm: ms[nm] / ms["sgd"] for nm in ms
                            if nm != "sgd" and "sgd" in ms}}
    rows.append(row)
    log(f"update {name} ({n / 1e6:.1f}M): " + ", ".join(
        f"{nm} {t:.1f} ms" for nm, t in ms.items()))
    del params, grads, calls
  return rows


def bench_resnet(batch: int, image: int, width: int, repeats: int,
                 budget: Budget, log: Callable) -> dict:
  if budget.left() < 90:
    return {"skipped": "time budget"}
  net = resnet50.ResNet50(num_classes=1000, width=width)
  key = jax.random.key(0)
  x = jax.random.normal(key, (batch, image, image, 3), jnp.bfloat16)
  y = jax.random.randint(key, (batch,), 0, 1000)
  variables = jax.jit(lambda: net.init(key, x[:1], train=False))()
  params, stats = variables["params"], variables["batch_stats"]
  n = sum(p.size for p in jax.tree.leaves(params))

  def make_step(opt):
    def loss_fn(p, stats):
      logits, new = net.apply({"params": p, "batch_stats": stats}, x,
                              train=True, mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      return jnp.mean(loss), new["batch_stats"]

    @jax.jit
    def step(p, stats, s):
      (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(p, stats)
      u, s = opt.update(g, s, p)
      return optax.apply_updates(p, u), stats, s, loss
    return step

  opts = {"sgd": optax.sgd(0.1, momentum=0.9),
          "gsm_sgd": optax_gsm.gsm_sgd(0.1, density=DENSITY, momentum=0.9)}
  calls = {}
  for label, opt in opts.items():
    step, state = make_step(opt), opt.init(params)
    calls[label] = lambda f=step, s=state: f(params, stats, s)[3]
  ms = {nm: 1e3 * t for nm, t in
        common.time_interleaved(calls, repeats).items()}
  row = {"batch": batch, "image": image, "width": width, "params": n,
         "ms": ms, "overhead": ms["gsm_sgd"] / ms["sgd"] - 1}
  log(f"resnet50 (width {width}, {n / 1e6:.1f}M, batch {batch}, {image}px): "
      f"sgd {ms['sgd']:.1f} ms, gsm_sgd {ms['gsm_sgd']:.1f} ms, "
      f"overhead {row['overhead']:+.1%}")
  return row


def bench_torch_peer(shapes: Any, repeats: int, budget: Budget,
                     log: Callable) -> dict:
  if torch is None or not torch.cuda.is_available():
    return {"skipped": "torch with CUDA not present"}
  if budget.left() < 45:
    return {"skipped": "time budget"}
  from benchmarks import peers  # pylint: disable=g-import-not-at-top
  params = [np.asarray(x) for x in jax.tree.leaves(
      common.random_tree(shapes, seed=0))]
  grads = [np.asarray(x) for x in jax.tree.leaves(
      common.random_tree(shapes, seed=1, scale=1e-2))]
  step = peers.TorchStep(params, grads, lr=0.1, momentum=0.9,
                         weight_decay=5e-4, compression=1 / DENSITY)
  step.params = [p.detach().cuda().requires_grad_(True) for p in step.params]
  step.raw_grads = [g.cuda() for g in step.raw_grads]
  for p, g in zip(step.params, step.raw_grads):
    p.grad = g
  step.opt = torch.optim.SGD(step.params, lr=0.1, momentum=0.9,
                             weight_decay=5e-4)
  tree = common.random_tree(shapes, seed=0)
  g_tree = common.random_tree(shapes, seed=1, scale=1e-2)
  opt = optax_gsm.gsm_sgd(0.1, density=DENSITY, momentum=0.9)
  state = opt.init(tree)
  update = jax.jit(opt.update).lower(g_tree, state, tree).compile()

  def torch_call():
    step()
    torch.cuda.synchronize()

  ms = {nm: 1e3 * t for nm, t in common.time_interleaved(
      {"torch_gsm_sgd": torch_call,
       "optax_gsm": lambda: update(g_tree, state, tree)}, repeats).items()}
  log(f"peer: torch {ms['torch_gsm_sgd']:.1f} ms, optax_gsm "
      f"{ms['optax_gsm']:.1f} ms")
  return {"ms": ms, "speedup": ms["torch_gsm_sgd"] / ms["optax_gsm"]}


def billion_shapes() -> common.Shapes:
  return common.transformer_shapes(d_model=2048, layers=20, vocab=50_000,
                                   seq=2048)


def table(result: dict) -> str:
  info = result["device"]
  lines = [f"device: {info['device']} ({info['backend']}, "
           f"{info['device_count']} device(s)), jax {info['jax']}, optax "
           f"{info['optax']}, optax_gsm {info['optax_gsm']}, torch "
           f"{info['torch']}, {info['date_utc']} UTC, host load "
           f"{info['load_avg_1m']:.1f} on {info['host_cpus']} CPUs", "",
           "| selection N | read ms | histogram | radix_count b=1 | b=2 | "
           "b=4 | b=8 | top_k | sort | agree |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in result["selection"]:
    if "skipped" in r:
      lines.append(f"| {r['n']:,} | skipped ({r['skipped']}) |||||||||")
      continue
    ms = r["ms"]
    cell = lambda nm: (f"{ms[nm]:.2f}" if nm in ms else
                       "failed" if nm in r["errors"] else "—")
    lines.append(
        f"| {r['n']:,} | {cell('read')} | {cell('histogram')} | "
        + " | ".join(cell(f"radix_count b={b}") for b in COUNT_BITS)
        + f" | {cell('top_k')} | {cell('sort')} | {r['masks_agree']} |")
  lines += ["", "| update | params | sgd ms | gsm_sgd auto | histogram | "
            "radix_count | auto/sgd |", "|---|---|---|---|---|---|---|"]
  for r in result["update"]:
    if "skipped" in r:
      lines.append(f"| {r['model']} | skipped ({r['skipped']}) ||||||")
      continue
    ms = r["ms"]
    cell = lambda nm: f"{ms[nm]:.2f}" if nm in ms else "failed"
    ratio = r["gsm_over_sgd"].get("gsm_sgd auto")
    lines.append(
        f"| {r['model']} | {r['params'] / 1e6:.1f}M | {cell('sgd')} | "
        f"{cell('gsm_sgd auto')} | {cell('gsm_sgd histogram')} | "
        f"{cell('gsm_sgd radix_count')} | "
        + (f"{ratio:.2f}x |" if ratio is not None else "— |"))
  res = result["resnet50"]
  lines.append("")
  if "skipped" in res:
    lines.append(f"ResNet-50 step: skipped ({res['skipped']})")
  else:
    lines.append(
        f"ResNet-50 step (width {res['width']}, {res['params'] / 1e6:.1f}M, "
        f"batch {res['batch']}, {res['image']}px, bf16 compute): sgd "
        f"{res['ms']['sgd']:.1f} ms, gsm_sgd {res['ms']['gsm_sgd']:.1f} ms, "
        f"overhead {res['overhead']:+.1%}")
  peer = result["torch_peer"]
  lines.append("PyTorch peer: " + (
      f"skipped ({peer['skipped']})" if "skipped" in peer else
      f"torch {peer['ms']['torch_gsm_sgd']:.1f} ms, optax_gsm "
      f"{peer['ms']['optax_gsm']:.1f} ms ({peer['speedup']:.1f}x)"))
  return "\n".join(lines)


def plot(result: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = [r for r in result["selection"] if "skipped" not in r]
  fig, ax = plt.subplots(figsize=(6, 4))
  names = sorted({nm for r in rows for nm in r["ms"]})
  for nm in names:
    pts = [(r["n"], r["ms"][nm]) for r in rows if nm in r["ms"]]
    ax.loglog(*zip(*pts), marker="o", label=nm)
  info = result["device"]
  ax.set(xlabel="entries N (k = 10%)", ylabel="ms per mask",
         title=f"exact top-k mask on {info['device']} ({info['backend']})")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="tiny sizes, any backend, < 60 s (the test)")
  parser.add_argument("--cpu", action="store_true",
                      help="modest sizes for a CPU (about 3 minutes)")
  parser.add_argument("--budget-s", type=float, default=480)
  parser.add_argument("--out", default=None, help="JSON path (and .png)")
  args = parser.parse_args()
  budget = Budget(args.budget_s)
  m = 1_000_000
  info = device_info()
  memory = info["device_memory_bytes"] or 0
  if args.quick:
    sizes, ref_max, bits8_max, repeats = [4096, 65536], 65536, 65536, 2
    models = {"transformer_tiny": common.transformer_shapes(
        d_model=32, layers=1, vocab=256, seq=16)}
    resnet = dict(batch=2, image=32, width=4)
  elif args.cpu:
    sizes, ref_max, bits8_max, repeats = [m, 4 * m], m, 0, 3
    models = {"resnet50 (25.6M)": common.resnet50_shapes()}
    resnet = dict(batch=8, image=64, width=16)
  else:
    # Keys, scores, masks and a sort's scratch: about 40 bytes per entry.
    sizes = [n for n in (m, 10 * m, 100 * m, 1000 * m)
             if not memory or 40 * n < memory]
    ref_max, bits8_max, repeats = 100 * m, 100 * m, 10
    models = {"resnet50 (25.6M)": common.resnet50_shapes(),
              "transformer (110M)": common.transformer_shapes(),
              "transformer (1B)": billion_shapes()}
    # 1B: params, grads, momentum, update, keys, masks: about 25 B/param.
    if memory and 25 * common.num_params(models["transformer (1B)"]) > memory:
      del models["transformer (1B)"]
    resnet = dict(batch=256, image=224, width=64)
  log = common.log
  log(f"device: {info}")
  result = {"command": " ".join(["python"] + sys.argv), "device": info}
  result["selection"] = bench_selection(sizes, ref_max, bits8_max, repeats,
                                        budget, log)
  result["update"] = bench_update(models, repeats, budget, log)
  try:  # a failure here must not lose the sections already measured
    result["resnet50"] = bench_resnet(repeats=repeats, budget=budget,
                                      log=log, **resnet)
  except Exception as e:  # pylint: disable=broad-except
    result["resnet50"] = {"skipped": f"failed: {type(e).__name__}: {e}"[:300]}
  try:
    result["torch_peer"] = bench_torch_peer(
        common.resnet50_shapes(), repeats, budget, log)
  except Exception as e:  # pylint: disable=broad-except
    result["torch_peer"] = {"skipped": f"failed: {type(e).__name__}: {e}"[:300]}
  out = args.out or os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results",
      f"accelerator_{info['backend']}{'_quick' if args.quick else ''}.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(result, f, indent=1)
  plot(result, os.path.splitext(out)[0] + ".png")
  log(f"wrote {out} and its .png")
  print(table(result))


if __name__ == "__main__":
  main()
