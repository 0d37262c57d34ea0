"""GSM update beside its peers: the official PyTorch step, torch SGD, optax SGD.

Times one optimizer update (mask, weight decay, momentum and the parameter
write) on model-shaped pytrees of random float32 parameters and gradients,
every method interleaved round-robin in one run (median and IQR of the
repeats after a warm-up), at three sizes by default:

* ``266K``: LeNet-300-100 (784x300, 300x100, 100x10 kernels and biases),
* ``25.6M``: ResNet-50 (``common.resnet50_shapes``),
* ``110M``: a BERT-base-sized decoder (``common.transformer_shapes``),

(``1M``, ResNet-50 at width 0.17, is there for ``--quick``). Density 20% by
default (``--compression 5``). The methods:

* ``optax_sgd``: ``optax.sgd(lr, momentum=0.99)`` after
  ``optax.add_decayed_weights(1e-4)``, the dense baseline;
* ``gsm_sgd``: ``optax_gsm.gsm_sgd(lr, compression=C, momentum=0.99,
  weight_decay=1e-4)`` with the default ``selection="histogram"``;
  ``gsm_sgd[sort]`` and ``gsm_sgd[top_k]`` too, up to ``--reference-max``
  parameters only (1M by default, so at 266K: they are full sorts, about a
  second per update at 1M and several at 25M);
* ``torch_gsm_sgd``: the official per-step GSM mask (as the paper's released
  PyTorch code computes it, re-implemented here): concatenate
  ``|grad * w|`` over every 2-D and 4-D tensor, take the k-th largest value
  with ``torch.topk``, k = ``int(N_pool / C)``, keep the entries ``>=`` that
  threshold, multiply the pooled gradients by the mask (out of place, as the
  official code does), then ``torch.optim.SGD(lr, momentum=0.99,
  weight_decay=1e-4)`` (heavy ball, no Nesterov, on every tensor);
* ``torch_sgd``: that ``torch.optim.SGD`` step alone (no mask).

Every JAX method is one jitted step ``params, state -> params, state`` with
both donated, so it updates in place like ``optimizer.step()``; the
gradients are fixed inputs (as after a backward pass). Weight decay acts on
every leaf on both sides (``gsm_sgd``'s default, torch's ``weight_decay``).
torch uses as many intra-op threads as the process has cores (printed and
saved; ``--torch-threads`` to change); XLA:CPU uses all of them by default.
On busy cores torch's OpenMP threads suffer badly from oversubscription
(seen here at load 8 on 2 cores: ``torch_sgd`` at 266K took 84 ms with 2
threads, 0.4 ms with 1), so only runs on quiet cores give peer ratios.

Where the two masks differ: ``optax_gsm`` keeps exactly Q = floor(N/C)
entries (ties broken by leaf order, then row-major); the official rule keeps
every entry ``>=`` the threshold, so it keeps more than Q when values tie at
the threshold (and all of them when fewer than Q scores are non-zero). The
pool is the same here (``optax_gsm`` pools ndim >= 2, the official code ndim
in {2, 4}; these pytrees have no 3-D leaves). On tie-free input the kept sets
are identical; every run checks it per size before timing and records the
counts (``mask_checks`` in the JSON). At 25M and more, exact ties of
float32 scores at the threshold become likely, and the check reports them.

torch is an optional extra for this benchmark only (``pip install -e
".[peers]"``, or the CPU build: ``pip install torch --index-url
https://download.pytorch.org/whl/cpu``). Without it the JAX rows are still
timed and the script exits 0.

  python benchmarks/peers.py                         # 266K, 25.6M, 110M
  python benchmarks/peers.py --sizes 25.6M --repeats 3
  python benchmarks/peers.py --quick                 # smoke run (266K, 1M)

Writes benchmarks/results/peers.json (peers_quick.json with --quick), after
every size, and a log-log plot of time per update against size beside it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=wrong-import-position
import optax_gsm  # pylint: disable=wrong-import-position

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:  # optional: pip install -e ".[peers]"
  torch = None

TORCH_MISSING = (
    "torch is not installed: timing the JAX rows only. For the PyTorch peer, "
    "install the CPU build with\n"
    "  pip install torch --index-url https://download.pytorch.org/whl/cpu\n"
    "or this project's extra: pip install -e \".[peers]\"")


def lenet300_shapes() -> common.Shapes:
  """LeNet-300-100: 266,610 parameters, three dense layers."""
  return {f"fc{i}": {"kernel": (n_in, n_out), "bias": (n_out,)}
          for i, (n_in, n_out) in enumerate(((784, 300), (300, 100),
                                             (100, 10)))}


SIZES: dict[str, tuple[str, Callable[[], common.Shapes]]] = {
    "266K": ("LeNet-300-100", lenet300_shapes),
    "1M": ("ResNet-50 x0.17", lambda: common.resnet50_shapes(0.17)),
    "25.6M": ("ResNet-50", common.resnet50_shapes),
    "110M": ("transformer (BERT-base size)", common.transformer_shapes),
}
DEFAULT_SIZES = ("266K", "25.6M", "110M")
QUICK_SIZES = ("266K", "1M")
BASELINE = "optax_sgd"
PEER = "torch_gsm_sgd"
REFERENCE_SELECTIONS = ("sort", "top_k")


def num_threads() -> int:
  """The cores this process may run on (its affinity set, else all)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def versions() -> dict[str, Any]:
  return {"python": platform.python_version(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__,
          "optax": optax.__version__, "optax_gsm": optax_gsm.__version__,
          "numpy": np.__version__,
          "torch": torch.__version__ if torch is not None else None}


def random_tree(shapes: common.Shapes, seed: int, scale: float = 1.0) -> Any:
  """Float32 normal arrays shaped by ``shapes``, drawn by numpy.

  Like ``common.random_tree``, without one ``jax.random`` compilation per
  distinct leaf shape (ResNet-50 has dozens: minutes on busy cores).
  """
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda shape: jnp.asarray(scale * rng.standard_normal(shape,
                                                            np.float32)),
      shapes, is_leaf=lambda x: isinstance(x, tuple))


# ----------------------------------------------------------------- methods


class JaxStep:
  """One jitted, donated ``params, state -> params, state`` update."""

  def __init__(self, opt: optax.GradientTransformation, params: Any,
               grads: Any):
    self.params = jax.tree.map(jnp.copy, params)  # ours: they get donated
    self.state = opt.init(self.params)
    self.grads = grads

    def step(p, s, g):
      updates, s = opt.update(g, s, p)
      return optax.apply_updates(p, updates), s
    self._step = jax.jit(step, donate_argnums=(0, 1))

  def __call__(self) -> Any:
    self.params, self.state = self._step(self.params, self.state, self.grads)
    return self.params


def official_masks(weights: Sequence[Any], grads: Sequence[Any],
                   nz: int) -> tuple[list[Any], Any]:
  """The official per-step GSM mask of the pooled tensors, in torch.

  Metric |grad * w| of every pooled tensor, concatenated; threshold the
  nz-th largest (``torch.topk``); an entry is active iff its metric is >= the
  threshold. Returns the bool masks (shaped like the weights) and the
  threshold.
  """
  metric = torch.cat([(g * w).abs().reshape(-1)
                      for w, g in zip(weights, grads)])
  threshold = torch.topk(metric, nz).values[-1]
  active = metric >= threshold
  masks = [m.view_as(w) for m, w in zip(
      torch.split(active, [w.numel() for w in weights]), weights)]
  return masks, threshold


class TorchStep:
  """``torch.optim.SGD`` on copies of the leaves, optionally GSM-masked.

  ``compression=None`` is plain SGD. Otherwise every step masks the pooled
  gradients (ndim 2 or 4) by :func:`official_masks` on the current weights
  and the raw gradients, then steps.
  """

  def __init__(self, params: Sequence[np.ndarray],
               grads: Sequence[np.ndarray], lr: float, momentum: float,
               weight_decay: float, compression: float | None):
    self.params = [torch.tensor(p, requires_grad=True) for p in params]
    self.raw_grads = [torch.tensor(g) for g in grads]
    for p, g in zip(self.params, self.raw_grads):
      p.grad = g
    self.pool = [i for i, p in enumerate(self.params) if p.dim() in (2, 4)]
    self.nz = (None if compression is None else
               int(sum(self.params[i].numel() for i in self.pool)
                   / compression))
    self.opt = torch.optim.SGD(self.params, lr=lr, momentum=momentum,
                               weight_decay=weight_decay, nesterov=False)

  def masks(self) -> tuple[list[Any], Any]:
    with torch.no_grad():  # torch may be absent: no decorator at import
      return official_masks([self.params[i] for i in self.pool],
                            [self.raw_grads[i] for i in self.pool], self.nz)

  def __call__(self) -> None:
    with torch.no_grad():
      if self.nz is not None:
        masks, _ = self.masks()
        for i, mask in zip(self.pool, masks):
          self.params[i].grad = self.raw_grads[i] * mask.to(
              self.raw_grads[i].dtype)
      self.opt.step()


# ---------------------------------------------------------------- protocol


def check_masks(params: Any, grads: Any, compression: float) -> dict:
  """Kept sets of ``optax_gsm.gsm`` and :func:`official_masks`, compared.

  ``optax_gsm``'s kept set is where ``gsm``'s masked gradient is non-zero
  (the random gradients have no zeros).
  """
  gsm = optax_gsm.gsm(compression)
  updates, _ = jax.jit(gsm.update)(grads, gsm.init(params), params)
  leaves = jax.tree.leaves(params)
  pool = [i for i, x in enumerate(leaves) if x.ndim in (2, 4)]
  ours = [np.asarray(u) != 0 for u in jax.tree.leaves(updates)]
  ours = [ours[i] for i in pool]
  record = {"k": int(sum(leaves[i].size for i in pool) / compression),
            "optax_gsm_kept": int(sum(m.sum() for m in ours))}
  if torch is None:
    return record
  w = [torch.tensor(np.asarray(leaves[i])) for i in pool]
  g = [torch.tensor(np.asarray(jax.tree.leaves(grads)[i])) for i in pool]
  with torch.no_grad():
    theirs, threshold = official_masks(w, g, record["k"])
    ties = int(sum(int(((gi * wi).abs() == threshold).sum())
                   for wi, gi in zip(w, g)))
  theirs = [m.numpy() for m in theirs]
  record.update(
      torch_kept=int(sum(m.sum() for m in theirs)),
      entries_equal_threshold=ties,
      same_kept_set=all(np.array_equal(a, b) for a, b in zip(ours, theirs)),
      optax_gsm_subset_of_torch=all(
          bool(np.all(b[a])) for a, b in zip(ours, theirs)))
  return record


def methods_for(params: Any, grads: Any, n_params: int, args: Any
                ) -> dict[str, Callable[[], Any]]:
  lr, mom, wd, comp = 1e-3, args.momentum, args.weight_decay, args.compression
  fns: dict[str, Callable[[], Any]] = {
      BASELINE: JaxStep(optax.chain(optax.add_decayed_weights(wd),
                                    optax.sgd(lr, momentum=mom)),
                        params, grads)}
  selections = ["histogram"]
  if n_params <= args.reference_max:
    selections += list(REFERENCE_SELECTIONS)
  for sel in selections:
    name = "gsm_sgd" if sel == "histogram" else f"gsm_sgd[{sel}]"
    fns[name] = JaxStep(optax_gsm.gsm_sgd(
        lr, compression=comp, momentum=mom, weight_decay=wd, selection=sel),
        params, grads)
  if args.torch:
    p_np = [np.array(x) for x in jax.tree.leaves(params)]
    g_np = [np.array(x) for x in jax.tree.leaves(grads)]
    fns[PEER] = TorchStep(p_np, g_np, lr, mom, wd, comp)
    fns["torch_sgd"] = TorchStep(p_np, g_np, lr, mom, wd, None)
  return fns


def bench_size(size: str, args: Any) -> tuple[list[dict], dict]:
  """The rows of one pytree size, and its mask check."""
  model, make = SIZES[size]
  shapes = make()
  n_params = common.num_params(shapes)
  params = random_tree(shapes, seed=0)
  grads = random_tree(shapes, seed=1, scale=1e-2)
  check = {"size": size, "params": n_params,
           **check_masks(params, grads, args.compression)}
  common.log(f"{size} ({model}, {n_params:,} parameters): mask check {check}")
  fns = methods_for(params, grads, n_params, args)
  common.log(f"  timing {', '.join(fns)} x {args.repeats}")
  samples = common.time_samples(fns, args.repeats, warmup=2)
  rows = []
  for name, ts in samples.items():
    ms = sorted(1e3 * t for t in ts)
    q25, med, q75 = np.percentile(ms, [25, 50, 75])
    rows.append({"size": size, "model": model, "params": n_params,
                 "k": check["k"], "method": name,
                 "impl": "torch" if name.startswith("torch") else "jax",
                 "median_ms": float(med), "q25_ms": float(q25),
                 "q75_ms": float(q75), "iqr_ms": float(q75 - q25),
                 "samples_ms": [1e3 * t for t in ts]})
  by_name = {r["method"]: r["median_ms"] for r in rows}
  for r in rows:
    r["over_optax_sgd"] = r["median_ms"] / by_name[BASELINE]
    r["over_torch_gsm_sgd"] = (r["median_ms"] / by_name[PEER]
                               if PEER in by_name else None)
  return rows, check


# ------------------------------------------------------------------ timing


# ------------------------------------------------------------------ report


def table(rows: list[dict]) -> str:
  lines = ["| size | params | method | median ms | IQR ms | x optax.sgd | "
           "x torch_gsm_sgd |", "|---|---|---|---|---|---|---|"]
  for r in rows:
    peer = ("—" if r["over_torch_gsm_sgd"] is None
            else f"{r['over_torch_gsm_sgd']:.3g}")
    lines.append(
        f"| {r['size']} | {r['params']:,} | {r['method']} | "
        f"{r['median_ms']:.3g} | {r['iqr_ms']:.2g} | "
        f"{r['over_optax_sgd']:.3g} | {peer} |")
  return "\n".join(lines)


def plot(rows: list[dict], path: str) -> bool:
  """Log-log time per update against parameters, one line per method."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    common.log("matplotlib is not installed: no plot")
    return False
  fig, ax = plt.subplots(figsize=(6.4, 4.6))
  for method in dict.fromkeys(r["method"] for r in rows):
    rs = sorted((r for r in rows if r["method"] == method),
                key=lambda r: r["params"])
    x = [r["params"] for r in rs]
    y = [r["median_ms"] for r in rs]
    err = [[r["median_ms"] - r["q25_ms"] for r in rs],
           [r["q75_ms"] - r["median_ms"] for r in rs]]
    ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=method,
                linestyle="--" if method.startswith("torch") else "-")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("parameters")
  ax.set_ylabel("time per update (ms, median, IQR bars)")
  ax.set_title("GSM update vs peers (CPU)")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  common.log(f"wrote {path}")
  return True


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", nargs="*", default=None, choices=list(SIZES),
                      help=f"pytree sizes (default {' '.join(DEFAULT_SIZES)})")
  parser.add_argument("--repeats", type=int, default=None,
                      help="timed rounds after 2 warm-up rounds (default 11, "
                      "3 with --quick)")
  parser.add_argument("--quick", action="store_true",
                      help=f"smoke run: sizes {' '.join(QUICK_SIZES)}, "
                      "3 repeats")
  parser.add_argument("--compression", type=float, default=5.0,
                      help="C = total/kept (5: density 20%%)")
  parser.add_argument("--momentum", type=float, default=0.99)
  parser.add_argument("--weight-decay", type=float, default=1e-4)
  parser.add_argument("--reference-max", type=float, default=1e6,
                      help="time the sort/top_k selections up to this many "
                      "parameters")
  parser.add_argument("--no-torch", dest="torch", action="store_false",
                      help="skip the torch rows even if torch is installed")
  parser.add_argument("--torch-threads", type=int, default=None,
                      help="torch intra-op threads (default: the cores this "
                      "process may use)")
  parser.add_argument("--no-plot", dest="plot", action="store_false")
  parser.add_argument("--out", default=None, help="JSON path (the PNG goes "
                      "beside it)")
  args = parser.parse_args(argv)
  sizes = args.sizes or list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
  if args.repeats is None:
    args.repeats = 3 if args.quick else 11
  if args.torch and torch is None:
    print(TORCH_MISSING, flush=True)
    args.torch = False
  threads = num_threads()
  if args.torch:
    torch.set_num_threads(args.torch_threads or threads)
  out = args.out or os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results",
      "peers_quick.json" if args.quick else "peers.json")
  meta = {
      "command": " ".join(["python"] + (list(argv) if argv is not None
                                        else sys.argv)),
      "versions": versions(),
      "torch_threads": torch.get_num_threads() if args.torch else None,
      "torch_interop_threads": (torch.get_num_interop_threads()
                                if args.torch else None),
      "cores": threads,
      "settings": {"compression": args.compression,
                   "density": 1.0 / args.compression,
                   "momentum": args.momentum,
                   "weight_decay": args.weight_decay,
                   "repeats": args.repeats, "warmup": 2,
                   "reference_max": args.reference_max, "sizes": sizes},
      "timed": "one update in place: mask (GSM rows), weight decay, momentum, "
               "parameter write; JAX jitted with params and state donated",
  }
  common.log(f"machine: {common.machine()}")
  common.log(f"versions: {meta['versions']}; torch threads "
             f"{meta['torch_threads']} (cores {threads})")
  rows: list[dict] = []
  checks: list[dict] = []
  for i, size in enumerate(sizes):
    size_rows, check = bench_size(size, args)
    rows += size_rows
    checks.append(check)
    common.write_results(out, rows, **meta, mask_checks=checks,
                         peak_rss_bytes=common.peak_rss_bytes(),
                         complete=i == len(sizes) - 1)
  png = os.path.splitext(out)[0] + ".png"
  if args.plot:
    plot(rows, png)
  print(f"\nTime per update, density {1 / args.compression:.0%}, torch "
        f"threads {meta['torch_threads']}, {threads} cores, load "
        f"{os.getloadavg()[0]:.2f}:")
  print(table(rows))
  for c in checks:
    if "same_kept_set" in c:
      print(f"mask check {c['size']}: k={c['k']:,}, optax_gsm kept "
            f"{c['optax_gsm_kept']:,}, torch kept {c['torch_kept']:,}, "
            f"scores equal to the threshold {c['entries_equal_threshold']}, "
            f"same set "
            f"{c['same_kept_set']}")
  return {"rows": rows, "mask_checks": checks, "out": out,
          "png": png if args.plot else None, **meta}


if __name__ == "__main__":
  main()
