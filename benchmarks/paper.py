"""GSM against the pruning methods users know, on Fashion-MNIST (the paper's protocol).

For each model and seed: train a dense base model; then, at each compression
ratio C, and from that base with the same number of steps K and the same
learning-rate schedule:

* ``gsm``: the paper's GSM (``optax_gsm.gsm_sgd``, momentum 0.99), then a hard
  global magnitude prune, no fine-tuning (the paper's pipeline);
* ``gsm_lossless``: GSM with our option ``prune_step`` (docs/lossless.md):
  the hard prune at the first learning-rate decay, the mask held for the rest
  of the same schedule (``score_decay`` stays off; it lost on validation);
* ``magnitude_ft``: one-shot global magnitude prune, fine-tuned with the mask
  held (``prune`` + ``keep_masked``);
* ``gmp`` / ``gmp_layer``: gradual magnitude pruning, Zhu & Gupta's cubic
  schedule, global or per layer (``optax_gsm.gmp``);
* ``weightmom``: our reconstruction of WeightMom (``optax_gsm.weightmom``),
  run exactly as ``gmp``, checking every K/80 steps with window 15 and
  min_below 10;
* ``snip``: SNIP masks at initialization (``optax_gsm.snip_masks``), trained
  sparse for the base's and the pruning phase's steps together (B + K);
* ``ticket_gsm`` / ``ticket_magnitude``: lottery tickets, the mask from the GSM
  model or from the dense base, rewound to the initial weights
  (``optax_gsm.lottery_ticket``) and retrained for B steps with the mask held.

Protocols (``benchmarks/paper_protocol.py``): ``--protocol paper`` (the
official schedules, 200 + 280 epochs at batch 256; ``--scale 0.5`` halves
them), ``--protocol short`` (the first evidence's budgets) and ``--quick`` (a
CI smoke run). A validation split of the training set is held out; rows
record validation and test accuracy.

Long runs resume (``--resume`` skips rows already in the output file; dense
bases are cached under ``<out-dir>/cache``) and merge: ``--summarize a.json
b.json`` tabulates the rows of several runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_gsm
import paper_protocol as protocol
import paper_report as report_lib
from paper_protocol import METHODS, MODELS, WEIGHTMOM, Config
from paper_report import TABLE_BEGIN, write_doc  # pylint: disable=unused-import
from paper_train import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND_SEPARATOR = " + "  # between the commands of merged runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--protocol", default="paper", choices=("paper", "short"),
                 help="paper: the official schedules; short: the first "
                 "evidence's budgets")
  p.add_argument("--quick", action="store_true",
                 help="smoke run: data subset, few steps, one seed")
  p.add_argument("--scale", type=float, default=1.0,
                 help="multiply every epoch (or step) count, e.g. 0.5")
  p.add_argument("--data-dir", default=protocol.datasets.FASHION_MNIST_DIR,
                 help="folder with the four MNIST-style IDX files (raw or .gz)")
  p.add_argument("--out-dir", default=os.path.join(ROOT, "benchmarks",
                                                   "results"),
                 help="where the JSON and PNG files go")
  p.add_argument("--name", default=None,
                 help="output file prefix (default paper_<protocol>)")
  p.add_argument("--doc", default=None,
                 help="Markdown file whose table block is rewritten (with "
                 "--summarize: docs/evidence.md unless given; never the "
                 "README)")
  p.add_argument("--models", default=None,
                 help=f"comma-separated, from {sorted(MODELS)}")
  p.add_argument("--methods", default=None,
                 help=f"comma-separated, from {list(METHODS)}")
  p.add_argument("--ratios", default=None,
                 help="comma-separated compression ratios, for every model")
  p.add_argument("--seeds", type=int, default=None,
                 help="how many seeds (3 runs seeds 0, 1, 2)")
  p.add_argument("--first-seed", type=int, default=0,
                 help="the first seed (--seeds 1 --first-seed 2 runs seed 2)")
  p.add_argument("--base-steps", type=int, default=None,
                 help="dense base steps, for every model")
  p.add_argument("--prune-steps", type=int, default=None,
                 help="steps after the base (K), for every model")
  p.add_argument("--batch-size", type=int, default=None)
  p.add_argument("--lossless-prune-at", type=float, default=None,
                 metavar="FRACTION",
                 help="gsm_lossless prunes at this fraction of the GSM phase "
                 "(default: the first learning-rate decay)")
  p.add_argument("--resume", action="store_true",
                 help="keep the rows already in the output file; run the rest")
  p.add_argument("--no-progress", action="store_true",
                 help="no progress bars (one line per phase)")
  p.add_argument("--summarize", default=None, nargs="+", metavar="JSON",
                 help="train nothing: merge the rows of these results files "
                 "and rebuild the table, claims, plots and doc block")
  return p.parse_args(argv)


def _names(text: str, valid: tuple[str, ...], what: str) -> tuple[str, ...]:
  names = tuple(n.strip() for n in text.split(",") if n.strip())
  bad = [n for n in names if n not in valid]
  if bad or not names:
    raise ValueError(f"unknown {what} {bad or text!r}; expected a "
                     f"comma-separated list from {list(valid)}.")
  return names


def make_config(args: argparse.Namespace) -> Config:
  if args.scale <= 0:
    raise ValueError(f"--scale must be > 0, got {args.scale}.")
  cfg = protocol.make("quick" if args.quick else args.protocol, args.scale)
  if args.models:
    cfg.models = _names(args.models, tuple(MODELS), "model")
  if args.methods:
    cfg.methods = _names(args.methods, METHODS, "method")
  if args.ratios:
    try:
      ratios = tuple(float(r) for r in args.ratios.split(","))
    except ValueError:
      raise ValueError(f"--ratios must be numbers, got {args.ratios!r}.")
    if any(r < 1 for r in ratios):
      raise ValueError(f"--ratios must be >= 1, got {args.ratios!r}.")
    cfg.ratios = {m: ratios for m in MODELS}
  if args.seeds is not None and args.seeds < 1:
    raise ValueError(f"--seeds must be >= 1, got {args.seeds}.")
  if args.first_seed < 0:
    raise ValueError(f"--first-seed must be >= 0, got {args.first_seed}.")
  count = len(cfg.seeds) if args.seeds is None else args.seeds
  cfg.seeds = tuple(range(args.first_seed, args.first_seed + count))
  for name, value in (("base-steps", args.base_steps),
                      ("prune-steps", args.prune_steps),
                      ("batch-size", args.batch_size)):
    if value is not None and value < 1:
      raise ValueError(f"--{name} must be >= 1, got {value}.")
  if args.batch_size:
    cfg.batch_size = args.batch_size
  if args.base_steps:
    cfg.base_epochs = 0
    cfg.base_steps = {m: args.base_steps for m in MODELS}
  if args.prune_steps:
    cfg.prune_epochs = 0
    cfg.prune_steps = {m: args.prune_steps for m in MODELS}
  if args.lossless_prune_at is not None:
    if not 0 < args.lossless_prune_at < 1:
      raise ValueError("--lossless-prune-at must be in (0, 1), got "
                       f"{args.lossless_prune_at}.")
    cfg.lossless_prune_at = args.lossless_prune_at
  if "ticket_gsm" in cfg.methods and "gsm" not in cfg.methods:
    raise ValueError("method ticket_gsm needs method gsm (its mask).")
  return cfg


# ------------------------------------------------------------- methods


def layer_density(params_or_masks: Any) -> dict[str, float]:
  report = optax_gsm.sparsity_report(params_or_masks)
  return {leaf.path.removeprefix("params/").removesuffix("/kernel"):
          leaf.density for leaf in report.leaves}


class Base:
  """A seed's initial and dense-trained params, cached on disk."""

  def __init__(self, path: str):
    self.path = path

  def load(self, like: Any) -> tuple[Any, Any] | None:
    if not os.path.exists(self.path):
      return None
    z = np.load(self.path)
    treedef = jax.tree.structure(like)
    n = len(jax.tree.leaves(like))
    init = treedef.unflatten([jnp.asarray(z[f"i{i}"]) for i in range(n)])
    base = treedef.unflatten([jnp.asarray(z[f"b{i}"]) for i in range(n)])
    return init, base

  def save(self, init: Any, base: Any) -> None:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    arrays = {f"i{i}": np.asarray(x) for i, x in enumerate(
        jax.tree.leaves(init))}
    arrays.update({f"b{i}": np.asarray(x) for i, x in enumerate(
        jax.tree.leaves(base))})
    tmp = self.path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, self.path)


def run_model(model_name: str, seed: int, data: dict[str, Any], cfg: Config,
              trainer: Trainer, cache_dir: str, done: set[Any],
              emit: Any) -> None:
  """One model, one seed: the base, then every method at every ratio.

  ``done`` holds the (model, seed, method, ratio) already measured; ``emit``
  receives each new row as soon as it exists.
  """
  pretty, factory = MODELS[model_name]
  model = factory()
  n_train = len(data["y_train"])
  B, K = cfg.base_steps[model_name], cfg.prune_steps[model_name]
  rng = np.random.default_rng(seed)
  tag = f"[{model_name} seed {seed}]"
  init = model.init(jax.random.key(seed), data["x_train"][:1])
  pool = sum(x.size for x in jax.tree.leaves(init) if x.ndim >= 2)
  cache = Base(os.path.join(cache_dir, f"{cfg.protocol}_{model_name}_s{seed}"
                            f"_b{B}_bs{cfg.batch_size}_n{n_train}.npz"))
  cached = cache.load(init)
  if cached is None:
    print(f"{tag} dense base: {B} steps, pool {pool:,} weights", flush=True)
    base, _, base_s = trainer.train(
        ("base", B), protocol.sgd(cfg, B, n_train), init, B, rng,
        f"{tag} base")
    cache.save(init, base)
  else:
    print(f"{tag} dense base from {cache.path}", flush=True)
    _, base = cached
  dense_acc = trainer.accuracy(base)
  dense_val = trainer.accuracy(base, "val")
  print(f"{tag} dense accuracy {dense_acc:.4f} (val {dense_val:.4f})",
        flush=True)
  eta = protocol.gsm_weight_decay(cfg, K, n_train)
  lr = protocol.gsm_schedule(cfg, K, n_train)
  post_sgd = (optax.chain(
      optax.add_decayed_weights(cfg.sgd_weight_decay,
                                mask=optax_gsm.default_prunable),
      optax.sgd(lr, momentum=cfg.sgd_momentum))
              if cfg.protocol == "paper" else protocol.sgd(cfg, K, n_train))
  gmp_end = max(1, int((0.5 if cfg.protocol == "paper" else 0.75) * K))
  common = dict(model=model_name, model_name=pretty, seed=seed,
                protocol=cfg.protocol, scale=cfg.scale,
                batch_size=cfg.batch_size, base_steps=B, prune_steps=K,
                train_size=n_train, val_size=len(data["y_val"]),
                test_size=len(data["y_test"]), dense_acc=dense_acc,
                dense_val_acc=dense_val, pool=pool)

  def record(method, ratio, params, masks, wall, **extra):
    kept = optax_gsm.sparsity_report(masks).kept
    nonzero = optax_gsm.sparsity_report(params).kept
    row = dict(common, method=method, compression=ratio,
               acc=trainer.accuracy(params),
               val_acc=trainer.accuracy(params, "val"),
               target_kept=math.floor(pool / ratio), kept=kept,
               nonzero=nonzero, density=kept / pool,
               layer_density=layer_density(masks), wall_s=wall, **extra)
    print(f"{tag} {method:16s} {ratio:5.0f}x  test {row['acc']:.4f}  val "
          f"{row['val_acc']:.4f}  kept {kept:,}/{pool:,}  ({wall:.1f}s)",
          flush=True)
    emit(row)

  def todo(method, ratio):
    return method in cfg.methods and (model_name, seed, method,
                                      ratio) not in done

  masked_sgd = lambda opt, m: optax.chain(opt, optax_gsm.keep_masked(m))
  prune_fn = jax.jit(optax_gsm.prune, static_argnums=1)
  for ratio in cfg.ratios[model_name]:
    gsm_params = None
    for method in ("gsm", "gsm_lossless"):
      if not (todo(method, ratio) or (method == "gsm" and todo(
          "ticket_gsm", ratio))):
        continue
      options = {}
      if method == "gsm_lossless":
        options = dict(score_decay=cfg.lossless_score_decay,
                       prune_step=protocol.lossless_prune_step(cfg, K))
      opt = optax_gsm.gsm_sgd(
          lr, ratio, momentum=cfg.gsm_momentum, nesterov=cfg.gsm_nesterov,
          weight_decay=eta, weight_decay_mask=optax_gsm.default_prunable,
          **options)
      history = []
      epoch_steps = trainer.steps_per_epoch
      every = max(1, (K // epoch_steps) // 40) * epoch_steps

      def watch(step, params, _, r=ratio, h=history):
        if step % every == 0 or step == K:
          h.append(dict(step=step, prune_share=float(optax_gsm.prune_share(params, r))))

      rng_m = np.random.default_rng([seed, int(ratio), 1])
      trained, _, wall = trainer.train((method, ratio, K), opt, base, K,
                                       rng_m, f"{tag} {method} {ratio:.0f}x",
                                       callback=watch)
      before = trainer.accuracy(trained)
      before_val = trainer.accuracy(trained, "val")
      pruned, masks = prune_fn(trained, ratio)
      if method == "gsm":
        gsm_params = pruned
      removed = max(float(jnp.max(jnp.abs(jnp.where(m, 0.0, w)))) for m, w in
                    zip(jax.tree.leaves(masks, is_leaf=lambda x: x is None),
                        jax.tree.leaves(trained)) if m is not None)
      if todo(method, ratio):
        record(method, ratio, pruned, masks, wall, max_abs_removed=removed,
               acc_before_hard_prune=before, val_before_hard_prune=before_val,
               weight_decay=eta, options=options, history=history)
    if todo("magnitude_ft", ratio):
      pruned, masks = prune_fn(base, ratio)
      one_shot = trainer.accuracy(pruned)
      tuned, _, wall = trainer.train(
          ("ft", ratio, K), masked_sgd(post_sgd, masks), pruned, K,
          np.random.default_rng([seed, int(ratio), 2]),
          f"{tag} magnitude_ft {ratio:.0f}x")
      record("magnitude_ft", ratio, tuned, masks, wall,
             acc_one_shot_no_ft=one_shot)
    for method, scope in (("gmp", "global"), ("gmp_layer", "layer")):
      if not todo(method, ratio):
        continue
      opt = optax.chain(post_sgd, optax_gsm.gmp(
          1 / ratio, begin_step=0, end_step=gmp_end,
          update_every=max(1, gmp_end // 20), scope=scope))
      tuned, state, wall = trainer.train(
          (method, ratio, K), opt, base, K,
          np.random.default_rng([seed, int(ratio), 3]),
          f"{tag} {method} {ratio:.0f}x")
      record(method, ratio, tuned, state[1].masks, wall, gmp_end_step=gmp_end)
    if todo("weightmom", ratio):
      every = max(1, K // WEIGHTMOM["checks_per_k"])
      end = max(1, min(gmp_end, K - 1 - WEIGHTMOM["window"] * every))
      opt = optax.chain(post_sgd, optax_gsm.weightmom(
          1 / ratio, begin_step=0, end_step=end, check_every=every,
          window=WEIGHTMOM["window"], min_below=WEIGHTMOM["min_below"]))
      tuned, state, wall = trainer.train(
          ("weightmom", ratio, K), opt, base, K,
          np.random.default_rng([seed, int(ratio), 4]),
          f"{tag} weightmom {ratio:.0f}x")
      record("weightmom", ratio, tuned, state[1].masks, wall,
             weightmom_end_step=end, weightmom_check_every=every)
    if todo("snip", ratio):
      pick = np.random.default_rng([seed, int(ratio), 5]).integers(
          0, n_train, cfg.snip_batch)
      batch = (data["x_train"][pick], data["y_train"][pick])
      t0 = time.perf_counter()
      masks = optax_gsm.snip_masks(lambda q, c: trainer.loss_fn(q, *c), init,
                                   batch, ratio)
      snip_s = time.perf_counter() - t0
      tuned, _, wall = trainer.train(
          ("snip", ratio, B + K),
          masked_sgd(protocol.sgd(cfg, B + K, n_train), masks),
          optax_gsm.apply_masks(init, masks), B + K,
          np.random.default_rng([seed, int(ratio), 6]),
          f"{tag} snip {ratio:.0f}x")
      record("snip", ratio, tuned, masks, wall + snip_s)
    for method, trained in (("ticket_gsm", gsm_params),
                            ("ticket_magnitude", base)):
      if not todo(method, ratio):
        continue
      ticket, masks = optax_gsm.lottery_ticket(init, trained, ratio)
      tuned, _, wall = trainer.train(
          ("ticket", ratio, B),
          masked_sgd(protocol.sgd(cfg, B, n_train), masks), ticket, B,
          np.random.default_rng([seed, int(ratio), 7]),
          f"{tag} {method} {ratio:.0f}x")
      record(method, ratio, tuned, masks, wall)
  print(f"{tag} done; compile time so far {trainer.compile_s:.1f}s (not "
        "counted)", flush=True)


# -------------------------------------------------------------- driver


def report(rows, cfg, data_name, out_dir, prefix, doc, command,
           done) -> dict[str, Any]:
  summary = report_lib.summarize(rows)
  result = dict(command=command, data=data_name, complete=done,
                config=dataclasses.asdict(cfg), summary=summary,
                claims=report_lib.claims(summary), rows=rows,
                devices=str(jax.devices()), jax=jax.__version__,
                optax=optax.__version__)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{prefix}.json")
  with open(path + ".tmp", "w") as f:
    json.dump(result, f, indent=1)
  os.replace(path + ".tmp", path)
  if done:
    result["plots"] = report_lib.plot(summary, out_dir, prefix)
    text = report_lib.table(summary)
    print("\n" + text + "\n\nClaims check:\n" + "\n".join(result["claims"]),
          flush=True)
    if doc:
      report_lib.write_doc(doc, report_lib.doc_block(
          command.split(COMMAND_SEPARATOR), data_name, rows, summary,
          result["claims"]))
  return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  cfg = make_config(args)
  prefix = args.name or ("paper_quick" if args.quick
                         else f"paper_{args.protocol}")
  command = " ".join(["python benchmarks/paper.py",
                      *(sys.argv[1:] if argv is None else argv)])
  if args.summarize:
    rows, data_name, commands = [], None, []
    for path in args.summarize:
      with open(path) as f:
        saved = json.load(f)
      rows += saved["rows"]
      data_name = saved["data"]
      commands.append(saved["command"].strip() + (
          "" if saved["complete"] else " (stopped early)"))
    return report(rows, cfg, data_name, args.out_dir, prefix,
                  args.doc or report_lib.EVIDENCE_DOC,
                  COMMAND_SEPARATOR.join(commands), done=True)
  data = protocol.load_data(cfg, args.data_dir)
  n_train = len(data["y_train"])
  protocol.resolve_steps(cfg, n_train)
  rows: list[dict[str, Any]] = []
  path = os.path.join(args.out_dir, f"{prefix}.json")
  if args.resume and os.path.exists(path):
    with open(path) as f:
      rows = json.load(f)["rows"]
    print(f"[resume] {len(rows)} rows from {path}", flush=True)
  done = {(r["model"], r["seed"], r["method"], r["compression"])
          for r in rows}
  for m in cfg.models:
    K = cfg.prune_steps[m]
    eta = protocol.gsm_weight_decay(cfg, K, n_train)
    print(f"[{cfg.protocol}] {m}: batch {cfg.batch_size}, base "
          f"{cfg.base_steps[m]} steps, K = {K} steps "
          f"({K / protocol.steps_per_epoch(cfg, n_train):.0f} epochs), GSM lr "
          f"{cfg.gsm_lr}, beta {cfg.gsm_momentum}, weight decay {eta:.3g}",
          flush=True)

  def emit(row):
    rows.append(row)
    report(rows, cfg, data["name"], args.out_dir, prefix, None, command,
           done=False)

  t0 = time.perf_counter()
  for model_name in cfg.models:
    trainer = Trainer(MODELS[model_name][1](), data, cfg.batch_size,
                      scan_epochs=model_name == "lenet300",
                      progress=not args.no_progress)
    for seed in cfg.seeds:
      run_model(model_name, seed, data, cfg, trainer,
                os.path.join(args.out_dir, "cache"), done, emit)
      print(f"[progress] {model_name} seed {seed} finished at "
            f"{time.perf_counter() - t0:.0f}s", flush=True)
  return report(rows, cfg, data["name"], args.out_dir, prefix, args.doc,
                command, done=True)


if __name__ == "__main__":
  main()
