"""GSM in front of AdamW: does the hard prune hold, and what makes it hold?

``optax.chain(optax_gsm.gsm(C), optax.adamw(...))`` masks the gradient of the
passive weights, but AdamW's decoupled decay shrinks them only by
``lr * wd`` per step, so with a usual ``wd`` they keep most of their size and
the final hard prune removes weights the network uses. This study measures
that on LeNet-300-100 / Fashion-MNIST at 60x, from the paper protocol's dense
base (seed 0), with a validation split carved from the training set for every
choice; the test split is printed once per variant and not used to choose.

Variants (``--variants``; all share the lr schedule: warm-up, then x0.1 at
160/280, 200/280 and 240/280 of the run, as the paper's GSM schedule):

* ``wd1e-4``: AdamW's usual decay, hard prune after the last step;
* ``wd_exp6``: the decay that shrinks a passive weight by exp(-6) over the run
  (``optax_gsm.weight_decay_for(..., decoupled=True)``);
* ``..._prune``: the same, with ``optax_gsm.hard_prune_at`` at the first lr
  decay (our lossless option), so the last phases train the exact sparse net.

  python benchmarks/adamw_study.py --epochs 80
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import jax
import numpy as np
import optax

import optax_gsm
import paper
import paper_protocol as protocol
from paper_train import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {
    "wd1e-4": dict(weight_decay=1e-4, prune=False),
    "wd_exp6": dict(weight_decay="exp6", prune=False),
    "wd1e-4_prune": dict(weight_decay=1e-4, prune=True),
    "wd_exp6_prune": dict(weight_decay="exp6", prune=True),
}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--epochs", type=float, default=80.0,
                 help="epochs of the GSM + AdamW phase")
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--compression", type=float, default=60.0)
  p.add_argument("--variants", default=",".join(VARIANTS))
  p.add_argument("--base-cache", default=None,
                 help="a dense base .npz written by benchmarks/paper.py "
                 "(default: train one with the paper protocol)")
  p.add_argument("--quick", action="store_true", help="a smoke run")
  p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                "adamw.json"))
  args = p.parse_args(argv)
  bad = [v for v in args.variants.split(",") if v not in VARIANTS]
  if bad:
    p.error(f"unknown --variants {bad}; expected from {list(VARIANTS)}")
  if args.epochs <= 0 or args.lr <= 0 or args.compression < 1:
    p.error("--epochs and --lr must be > 0 and --compression >= 1")
  return args


def dense_base(cfg, trainer, data, cache_path) -> Any:
  """The paper protocol's dense base (seed 0), from the cache if given."""
  model = protocol.MODELS["lenet300"][1]()
  init = model.init(jax.random.key(0), data["x_train"][:1])
  cached = paper.Base(cache_path).load(init) if cache_path else None
  if cached is not None:
    return cached[1]
  n_train = len(data["y_train"])
  steps = cfg.base_steps["lenet300"]
  params, _, _ = trainer.train(("base",), protocol.sgd(cfg, steps, n_train),
                               init, steps, np.random.default_rng(0), "base")
  return params


def optimizer(variant: dict[str, Any], lr, prune_step: int | None,
              ratio: float, weight_decay: float
              ) -> optax.GradientTransformation:
  parts = [optax_gsm.gsm(ratio),
           optax.adamw(lr, weight_decay=weight_decay,
                       mask=optax_gsm.default_prunable)]
  if variant["prune"]:
    parts.append(optax_gsm.hard_prune_at(prune_step, ratio))
  return optax.chain(*parts)


def run_variant(name, cfg, trainer, base, args, steps) -> dict[str, Any]:
  variant = VARIANTS[name]
  warmup = max(1, min(round(5 * trainer.steps_per_epoch), steps // 16))
  lr = protocol.step_schedule(args.lr, steps, warmup, cfg.gsm_drops)
  wd = variant["weight_decay"]
  if wd == "exp6":
    wd = optax_gsm.weight_decay_for(lr, steps, exponent=6.0, decoupled=True)
  ratio = args.compression
  every = max(1, round(args.epochs / 20)) * trainer.steps_per_epoch
  history = []

  def watch(step, params, _):
    if step % every == 0 or step == steps:
      pruned, _ = optax_gsm.prune(params, ratio)
      history.append(dict(
          step=step, prune_share=float(optax_gsm.prune_share(params, ratio)),
          val=trainer.accuracy(params, "val"),
          val_pruned=trainer.accuracy(pruned, "val")))

  prune_step = protocol.lossless_prune_step(cfg, steps)
  opt = optimizer(variant, lr, prune_step, ratio, wd)
  trained, _, wall = trainer.train(
      (name,), opt, base, steps, np.random.default_rng([0, 7]),
      f"adamw {name}", callback=watch)
  pruned, _ = optax_gsm.prune(trained, ratio)
  row = dict(variant=name, weight_decay=float(wd), lr=args.lr, steps=steps,
             compression=ratio,
             exponent=optax_gsm.passive_decay_exponent(
                 lr, steps, weight_decay=wd, decoupled=True),
             prune_step=prune_step if variant["prune"] else None,
             val_before=trainer.accuracy(trained, "val"),
             val_after=trainer.accuracy(pruned, "val"),
             test_after=trainer.accuracy(pruned, "test"),
             prune_share=float(optax_gsm.prune_share(trained, ratio)),
             nonzero=optax_gsm.sparsity_report(pruned).kept, wall_s=wall,
             history=history)
  print(f"  {name}: wd {wd:.3g}, val {row['val_before']:.4f} -> "
        f"{row['val_after']:.4f} after the hard prune (test "
        f"{row['test_after']:.4f}), prune share {row['prune_share']:.2e}",
        flush=True)
  return row


def report(rows: list[dict[str, Any]], dense_val: float, path: str) -> None:
  lines = ["| variant | weight decay | decay exponent | val before prune | "
           "val after prune | test after prune | norm share removed |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['variant']} | {r['weight_decay']:.3g} | {r['exponent']:.2f} | "
        f"{100 * r['val_before']:.2f} | {100 * r['val_after']:.2f} | "
        f"{100 * r['test_after']:.2f} | {r['prune_share']:.2e} |")
  print(f"\ndense base: val {100 * dense_val:.2f}\n" + "\n".join(lines),
        flush=True)
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
  for r in rows:
    steps = [h["step"] for h in r["history"]]
    a.semilogy(steps, [max(h["prune_share"], 1e-12) for h in r["history"]],
               label=r["variant"])
    b.plot(steps, [100 * h["val_pruned"] for h in r["history"]],
           label=r["variant"])
  a.set(xlabel="step", ylabel="norm share outside top-Q",
        title="what a hard prune would remove")
  b.set(xlabel="step", ylabel="val accuracy after a hard prune (%)",
        ylim=(max(0, 100 * dense_val - 20), 100 * dense_val + 1))
  b.axhline(100 * dense_val, color="k", lw=0.8, ls="--", label="dense")
  b.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path.replace(".json", ".png"), dpi=110)


def main(argv=None) -> list[dict[str, Any]]:
  args = parse_args(argv)
  cfg = protocol.make("quick" if args.quick else "paper")
  data = protocol.load_data(cfg, protocol.datasets.FASHION_MNIST_DIR)
  protocol.resolve_steps(cfg, len(data["y_train"]))
  model = protocol.MODELS["lenet300"][1]()
  trainer = Trainer(model, data, cfg.batch_size, scan_epochs=True)
  base = dense_base(cfg, trainer, data, args.base_cache)
  dense_val = trainer.accuracy(base, "val")
  steps = (cfg.prune_steps["lenet300"] if args.quick
           else round(args.epochs * trainer.steps_per_epoch))
  print(f"[adamw] dense val {dense_val:.4f}; {steps} steps at batch "
        f"{cfg.batch_size}, lr {args.lr}, {args.compression:g}x", flush=True)
  t0 = time.perf_counter()
  rows = [run_variant(v, cfg, trainer, base, args, steps)
          for v in args.variants.split(",")]
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(dict(command="python benchmarks/adamw_study.py " + " ".join(
        argv if argv is not None else __import__("sys").argv[1:]),
                   dense_val=dense_val, rows=rows, jax=jax.__version__,
                   optax=optax.__version__,
                   wall_s=time.perf_counter() - t0), f, indent=1)
  report(rows, dense_val, args.out)
  return rows


if __name__ == "__main__":
  main()
