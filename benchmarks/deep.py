"""GSM on deep nets: ResNet-20 (batch norm) and a small ViT at 10x.

Fashion-MNIST, 55,000/5,000 train/validation split carved from the training
set (seeded), the test split evaluated for the record. For each net one dense
base is trained, then each method runs the same number of post-base steps
from it:

* ``gsm``: the paper's GSM (``optax_gsm.gsm_sgd``, decay from
  ``optax_gsm.weight_decay_for`` for the run), hard prune after the last step
  (``optax_gsm.prune``);
* ``gsm_prune_step``: the same with the hard prune inside training
  (``prune_step``), after which the kept weights train on;
* ``gmp_global`` / ``gmp_layer``: gradual magnitude pruning
  (``optax_gsm.gmp``) ranked over the pool or within each layer.

The pool is every ``kernel`` leaf (conv and dense weights, attention
projections, the ViT's patch embedding); biases, norm parameters and the
ViT's positional table stay dense (``--pool-include`` adds leaves by path).
Each method is evaluated before and after
its hard prune, and for batch-norm nets again after
``optax_gsm.recalibrate_batch_stats``. Every run checkpoints after each epoch
under ``--cache`` and resumes from there; results go to
``--out/results.json`` after every finished run, the table and the plot of
per-layer densities at the end.

Usage::

  python benchmarks/deep.py                  # the stated budget (see --help)
  python benchmarks/deep.py --quick          # tiny smoke run (< 1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import optax_gsm  # noqa: E402
from benchmarks import deep_report  # noqa: E402
from benchmarks import deep_train  # noqa: E402
from examples.common import datasets  # noqa: E402
from examples.common import models  # noqa: E402

METHODS = ("gsm", "gsm_prune_step", "gmp_global", "gmp_layer")
HERE = os.path.dirname(os.path.abspath(__file__))


def kernel_pool(params: Any) -> Any:
  """The pool: every leaf named ``kernel`` (conv, dense, attention)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: getattr(path[-1], "key", None) == "kernel"
      and jnp.ndim(x) >= 2, params)


def make_pool(include: list[str]) -> Any:
  """``kernel_pool``, plus the leaves ``include``'s patterns match."""
  if not include:
    return kernel_pool
  return optax_gsm.prunable_by_path(include=(r"(^|/)kernel$", *include),
                                    default=False)


def make_model(net: str, args: argparse.Namespace, seed: int) -> nnx.Module:
  rngs = nnx.Rngs(seed)
  if net == "resnet20":
    return models.ResNet(args.resnet_depth, tuple(args.resnet_widths),
                         rngs=rngs)
  if net == "vit":
    return models.ViT(patch=args.vit_patch, width=args.vit_width,
                      depth=args.vit_depth, heads=args.vit_heads, rngs=rngs)
  raise ValueError(f"unknown net {net!r}")


def load_data(args: argparse.Namespace, seed: int) -> dict[str, Any]:
  """55,000/5,000 train/validation (seeded split of train), and test."""
  train, test = datasets.load_idx_dataset(args.data_dir)
  perm = np.random.default_rng(seed).permutation(len(train.labels))
  val_idx, train_idx = perm[:args.val_size], perm[args.val_size:]
  if args.train_size:
    train_idx = train_idx[:args.train_size]
  x = train.images[train_idx]
  mean, std = float(x.mean() / 255.0), float(x.std() / 255.0)
  norm = lambda im: datasets.normalize(im, mean, std)[..., None]
  test_n = args.test_size or len(test.labels)
  return {"x_train": jnp.asarray(norm(x)),
          "y_train": jnp.asarray(train.labels[train_idx]),
          "x_val": jnp.asarray(norm(train.images[val_idx])),
          "y_val": jnp.asarray(train.labels[val_idx]),
          "x_test": jnp.asarray(norm(test.images[:test_n])),
          "y_test": jnp.asarray(test.labels[:test_n])}


def cosine(lr: float, steps: int, warmup: int = 0) -> optax.Schedule:
  if warmup:
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, steps)
  return optax.cosine_decay_schedule(lr, steps)


def post_schedule(lr: float, steps: int, flat: float) -> optax.Schedule:
  """Constant ``lr`` for the first ``flat`` share of ``steps``, then cosine."""
  b = int(flat * steps)
  return optax.join_schedules(
      [optax.constant_schedule(lr), optax.cosine_decay_schedule(lr,
                                                                steps - b)],
      [b])


def base_opt(net: str, args, steps: int) -> optax.GradientTransformation:
  lr = args.base_lr[net]
  return optax.chain(
      optax.add_decayed_weights(args.base_wd, mask=args.pool),
      optax.sgd(cosine(lr, steps, warmup=steps // 10), momentum=0.9))


def method_opt(method: str, net: str, args, steps: int, spe: int
               ) -> tuple[optax.GradientTransformation, dict[str, Any]]:
  """The post-base optimizer of ``method`` and the settings it used.

  GSM runs at the paper's momentum 0.98 and GMP at 0.9, with learning rates
  in the ratio 1 : 5 so that both have the same effective step
  lr / (1 - momentum), and the same schedule (constant, then a cosine to 0
  over the last ``1 - --flat`` of the run, while GMP's masks hold).
  """
  post = args.post_lr[net]  # the effective step lr / (1 - momentum)
  if method.startswith("gsm"):
    beta = 0.98
    lr = post_schedule(post * (1 - beta), steps, args.flat)
    eta = optax_gsm.weight_decay_for(lr, steps, momentum=beta)
    prune_step = (int(args.prune_at * steps) if method == "gsm_prune_step"
                  else None)
    opt = optax_gsm.gsm_sgd(lr, compression=args.compression, momentum=beta,
                            weight_decay=eta, weight_decay_mask=args.pool,
                            prunable=args.pool, prune_step=prune_step)
    return opt, {"lr": post * (1 - beta), "momentum": beta,
                 "weight_decay": eta, "prune_step": prune_step,
                 "schedule": f"constant, cosine after {args.flat}"}
  beta = 0.9
  scope = "global" if method == "gmp_global" else "layer"
  end = int(args.gmp_end * steps)
  every = max(1, spe // 4)
  opt = optax.chain(
      optax.add_decayed_weights(args.base_wd, mask=args.pool),
      optax.sgd(post_schedule(post * (1 - beta), steps, args.flat),
                momentum=beta),
      optax_gsm.gmp(1.0 / args.compression, begin_step=0, end_step=end,
                    update_every=every, scope=scope, prunable=args.pool))
  return opt, {"lr": post * (1 - beta), "momentum": beta,
               "weight_decay": args.base_wd, "end_step": end,
               "update_every": every, "scope": scope,
               "schedule": f"constant, cosine after {args.flat}"}


def evaluate(ev, p, s, data, splits=("val", "test")) -> dict[str, float]:
  return {split: deep_train.accuracy(ev, p, s, data[f"x_{split}"],
                                     data[f"y_{split}"]) for split in splits}


def recalibrate(net: deep_train.Net, params, stats, data, args) -> Any:
  """``optax_gsm.recalibrate_batch_stats`` on training batches."""
  model = net.module(params, stats)
  idx = deep_train.epoch_batches(len(data["y_train"]), args.recal_batch,
                                 (args.seed, 99))[:args.recal_batches]
  optax_gsm.recalibrate_batch_stats(
      model, (data["x_train"][i] for i in idx))
  return net.stats_of(model)


def run_net(net_name: str, args, data, entry: dict, save) -> None:
  seed = args.seed
  net = deep_train.Net(make_model(net_name, args, seed))
  ev = deep_train.make_eval(net)
  spe = len(data["y_train"]) // args.batch
  has_bn = bool(jax.tree.leaves(net.stats))
  entry["params"] = int(sum(x.size for x in jax.tree.leaves(net.params)))
  entry["pool"] = int(sum(x.size for x, f in zip(
      jax.tree.leaves(net.params), jax.tree.leaves(args.pool(net.params)))
      if f))
  entry["pooled_leaves"] = [
      r.path for r in optax_gsm.sparsity_report(net.params, args.pool).leaves]
  cache = os.path.join(args.cache, f"{net_name}_s{seed}")
  os.makedirs(cache, exist_ok=True)

  val_hist = lambda st, p, s, o: {"val": evaluate(ev, p, s, data, ("val",))[
      "val"]}
  base_steps = int(round(args.base_epochs * spe))
  base = deep_train.train(
      net, base_opt(net_name, args, base_steps), net.params, net.stats,
      base_steps, data, args.batch, (seed, 0), f"{net_name} dense",
      os.path.join(cache, "dense.pkl"), not args.no_progress,
      on_chunk=val_hist)
  if "dense" not in entry:
    entry["dense"] = {"epochs": args.base_epochs, "steps": base_steps,
                      "lr": args.base_lr[net_name], "train_s": base["train_s"],
                      "history": base["history"],
                      **evaluate(ev, base["params"], base["stats"], data)}
    save()
  post_steps = int(round(args.post_epochs * spe))
  for m_i, method in enumerate(args.methods, start=1):
    if method in entry.get("methods", {}):
      continue
    opt, settings = method_opt(method, net_name, args, post_steps, spe)
    out = deep_train.train(
        net, opt, base["params"], base["stats"], post_steps, data,
        args.batch, (seed, 10 + METHODS.index(method)),
        f"{net_name} {method}", os.path.join(cache, f"{method}.pkl"),
        not args.no_progress, on_chunk=val_hist)
    p, s = out["params"], out["stats"]
    row = {"settings": settings, "steps": post_steps,
           "epochs": args.post_epochs, "train_s": out["train_s"],
           "history": out["history"]}
    row["before_prune"] = evaluate(ev, p, s, data)
    pruned, masks = optax_gsm.prune(p, compression=args.compression,
                                    prunable=args.pool)
    row["after_prune"] = evaluate(ev, pruned, s, data)
    report = optax_gsm.sparsity_report(masks)
    row["density"] = report.density
    row["layers"] = [{"path": r.path, "shape": list(r.shape), "kept": r.kept,
                      "total": r.total} for r in report.leaves]
    changed = sum(int(jnp.sum(a != b)) for a, b in zip(
        jax.tree.leaves(p), jax.tree.leaves(pruned)))
    row["entries_zeroed_by_prune"] = changed
    if has_bn:
      new_stats = recalibrate(net, pruned, s, data, args)
      row["after_prune_recal"] = evaluate(ev, pruned, new_stats, data)
      dead = optax_gsm.dead_filter_outputs(net.module(pruned, s))
      row["dead_filters"] = {k: len(v["dead"]) for k, v in dead.items()
                             if v["dead"]}
      row["dead_filter_max_abs_output"] = max(
          [max(map(abs, v["constant"])) for v in dead.values() if v["dead"]]
          or [0.0])
    entry.setdefault("methods", {})[method] = row
    save()
    print(f"  {net_name} {method} [{m_i}/{len(args.methods)}]: "
          f"val {row['before_prune']['val']:.4f} -> "
          f"{row['after_prune']['val']:.4f}"
          + (f" -> recal {row['after_prune_recal']['val']:.4f}"
             if has_bn else ""), flush=True)


def parse(argv=None) -> argparse.Namespace:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--nets", nargs="+", default=["resnet20", "vit"])
  ap.add_argument("--methods", nargs="+", default=list(METHODS),
                  choices=METHODS)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--compression", type=float, default=10.0)
  ap.add_argument("--base-epochs", type=float, default=4.0)
  ap.add_argument("--post-epochs", type=float, default=2.0)
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--base-wd", type=float, default=5e-4)
  ap.add_argument("--prune-at", type=float, default=0.5,
                  help="gsm_prune_step's prune step, as a share of the run")
  ap.add_argument("--gmp-end", type=float, default=0.75,
                  help="GMP reaches its final density at this share")
  ap.add_argument("--pool-include", nargs="*", default=[],
                  help="regular expressions of leaf paths to pool besides "
                  "the kernels, e.g. '^pos$' (the ViT's positional table)")
  ap.add_argument("--flat", type=float, default=0.75,
                  help="post-base lr is constant for this share, then cosine")
  ap.add_argument("--recal-batches", type=int, default=20)
  ap.add_argument("--recal-batch", type=int, default=256)
  ap.add_argument("--resnet-depth", type=int, default=20)
  ap.add_argument("--resnet-widths", type=int, nargs=3, default=[8, 16, 32])
  ap.add_argument("--vit-patch", type=int, default=7)
  ap.add_argument("--vit-width", type=int, default=64)
  ap.add_argument("--vit-depth", type=int, default=6)
  ap.add_argument("--vit-heads", type=int, default=4)
  ap.add_argument("--val-size", type=int, default=5000)
  ap.add_argument("--train-size", type=int, default=0, help="0: all 55,000")
  ap.add_argument("--test-size", type=int, default=0, help="0: all 10,000")
  ap.add_argument("--data-dir", default=datasets.FASHION_MNIST_DIR)
  ap.add_argument("--out", default=os.path.join(HERE, "results", "deep"))
  ap.add_argument("--cache", default=os.path.join(HERE, ".cache", "deep"))
  ap.add_argument("--no-progress", action="store_true")
  ap.add_argument("--report", action="store_true",
                  help="only print the table and plot of the saved results")
  ap.add_argument("--quick", action="store_true",
                  help="tiny nets and data, a fraction of an epoch each")
  args = ap.parse_args(argv)
  args.pool = make_pool(args.pool_include)
  args.base_lr = {"resnet20": 0.1, "vit": 0.05}
  args.post_lr = {"resnet20": 0.25, "vit": 0.1}
  if args.quick:
    args.resnet_depth, args.resnet_widths = 8, [4, 8, 16]
    args.vit_width, args.vit_depth = 16, 1
    args.val_size, args.train_size, args.test_size = 256, 256, 256
    args.batch, args.base_epochs, args.post_epochs = 64, 1.0, 1.0
    args.recal_batches, args.recal_batch = 2, 64
  return args


def _config(args: argparse.Namespace) -> dict[str, Any]:
  return {k: v for k, v in vars(args).items()
          if k not in ("out", "cache", "no_progress", "data_dir", "nets",
                       "methods", "report", "pool")}


def load_results(out: str, seed: int) -> dict[str, Any]:
  """Every ``<net>_s<seed>.json`` under ``out``, by net."""
  results = {}
  for name in sorted(os.listdir(out)) if os.path.isdir(out) else ():
    if name.endswith(f"_s{seed}.json"):
      with open(os.path.join(out, name)) as f:
        results[name[:-len(f"_s{seed}.json")]] = json.load(f)
  return results


def main(argv=None) -> dict:
  args = parse(argv)
  os.makedirs(args.out, exist_ok=True)
  config = _config(args)
  defaults = _config(parse([]))  # keys added later read as their defaults
  env = {"jax": jax.__version__, "device": str(jax.devices()[0]),
         "cpu_count": os.cpu_count(), "python": platform.python_version(),
         "command": "python benchmarks/deep.py " + " ".join(
             sys.argv[1:] if argv is None else argv)}
  t0 = time.perf_counter()
  data = None if args.report else load_data(args, args.seed)
  for net_name in ([] if args.report else args.nets):
    path = os.path.join(args.out, f"{net_name}_s{args.seed}.json")
    results = {}
    if os.path.exists(path):  # one file per net: nets can run in parallel
      with open(path) as f:
        results = json.load(f)
    if {**defaults, **results.get("config", config)} != config:
      raise SystemExit(f"{path} holds results of another configuration; "
                       "pass another --out or remove it.")
    results["config"] = config
    results.setdefault("env", env)

    def save(results=results, path=path):
      with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
      os.replace(path + ".tmp", path)

    run_net(net_name, args, data, results, save)
  print(f"done in {time.perf_counter() - t0:.0f}s", flush=True)
  results = load_results(args.out, args.seed)
  print(deep_report.table(results))
  png = deep_report.plot(results, os.path.join(
      args.out, f"densities_s{args.seed}.png"))
  if png:
    print(f"plot: {png}")
  return results


if __name__ == "__main__":
  main()
