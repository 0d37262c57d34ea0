"""GSM against the pruning methods users know, on Fashion-MNIST (the paper's protocol).

For each model and seed: train a dense base model; then, at each compression
ratio C, and from that base with the same number of steps K:

* ``gsm``: GSM (``optax_gsm.gsm_sgd``, momentum 0.99), then a hard global
  magnitude prune, no fine-tuning (gsm.md section 6);
* ``magnitude_ft``: one-shot global magnitude prune, fine-tuned with the mask
  held (``prune`` + ``keep_masked``);
* ``gmp`` / ``gmp_layer``: gradual magnitude pruning, Zhu & Gupta's cubic
  schedule, global or per layer (``optax_gsm.gmp``);
* ``weightmom``: our reconstruction of WeightMom (``optax_gsm.weightmom``),
  run exactly as ``gmp`` (same SGD, cubic ramp over the first 75% of K),
  checking every K/80 steps with window 15 and min_below 10;
* ``snip``: SNIP masks at initialization (``optax_gsm.snip_masks``), trained
  sparse for the base's and the pruning phase's steps together (B + K);
* ``ticket_gsm`` / ``ticket_magnitude``: lottery tickets, the mask from the GSM
  model or from the dense base, rewound to the initial weights
  (``optax_gsm.lottery_ticket``) and retrained for B steps with the mask held.

Every method uses exact global top-Q selection (or per layer for
``gmp_layer``), so every pruned model keeps exactly floor(N / C) weights.

Run ``python benchmarks/paper.py`` for the full run (writes
``benchmarks/results/paper.json``, two PNG plots and the table block in
``docs/evidence.md``) or ``--quick`` for a smoke run of a minute or two.
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
from optax_gsm import datasets
from optax_gsm import models

MODELS = {
    "lenet300": ("LeNet-300-100", models.lenet_300_100),
    "lenet5": ("LeNet-5", models.LeNet5),
}
METHODS = ("gsm", "magnitude_ft", "gmp", "gmp_layer", "weightmom", "snip",
           "ticket_gsm", "ticket_magnitude")
BASELINES = ("magnitude_ft", "gmp", "gmp_layer", "weightmom", "snip")
# WeightMom's own settings, fixed before any result: a check every K/80 steps
# and a window of 15 checks, so that the ramp's end plus one window (when the
# exact final count is enforced) falls inside K.
WEIGHTMOM = dict(checks_per_k=80, window=15, min_below=10)
DEFAULT_RATIOS = {"lenet300": (30.0, 60.0, 120.0), "lenet5": (125.0, 300.0)}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE_BEGIN = "<!-- paper-table:begin -->"
TABLE_END = "<!-- paper-table:end -->"


@dataclasses.dataclass
class Config:
  """The protocol. Steps count optimizer updates of ``batch_size`` examples."""
  models: tuple[str, ...] = ("lenet300", "lenet5")
  methods: tuple[str, ...] = METHODS
  ratios: dict[str, tuple[float, ...]] = dataclasses.field(
      default_factory=lambda: dict(DEFAULT_RATIOS))
  seeds: int = 3
  batch_size: int = 64
  base_steps: dict[str, int] = dataclasses.field(
      default_factory=lambda: {"lenet300": 6000, "lenet5": 800})
  prune_steps: dict[str, int] = dataclasses.field(
      default_factory=lambda: {"lenet300": 6000, "lenet5": 1200})
  sgd_lr: float = 3e-2  # base training, fine-tuning, SNIP, tickets
  sgd_momentum: float = 0.9
  sgd_weight_decay: float = 5e-4
  gsm_lr: float = 1e-2
  gsm_momentum: float = 0.99
  # eta is set so that sum_k lr_k * eta / (1 - beta) = decay_exponent over the
  # GSM phase: a weight that stays passive shrinks by about exp(-exponent).
  gsm_decay_exponent: float = 6.0
  snip_batch: int = 256
  train_subset: int | None = None
  test_subset: int | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true",
                 help="smoke run: data subset, few steps, one seed")
  p.add_argument("--data-dir", default=datasets.FASHION_MNIST_DIR,
                 help="folder with the four MNIST-style IDX files (raw or .gz)")
  p.add_argument("--out-dir", default=os.path.join(ROOT, "benchmarks",
                                                   "results"),
                 help="where the JSON and PNG files go")
  p.add_argument("--doc", default=None,
                 help="Markdown file whose table block is rewritten "
                 "(default docs/evidence.md for a full run, none for --quick)")
  p.add_argument("--models", default=None,
                 help=f"comma-separated, from {sorted(MODELS)}")
  p.add_argument("--methods", default=None,
                 help=f"comma-separated, from {list(METHODS)}")
  p.add_argument("--seeds", type=int, default=None)
  p.add_argument("--base-steps", type=int, default=None,
                 help="dense base steps, for every model")
  p.add_argument("--prune-steps", type=int, default=None,
                 help="steps after the base (K), for every model")
  p.add_argument("--batch-size", type=int, default=None)
  p.add_argument("--summarize", default=None, metavar="JSON",
                 help="train nothing: rebuild the table, claims, plots and "
                 "doc block from the rows of a (possibly partial) results file")
  return p.parse_args(argv)


def _names(text: str, valid: tuple[str, ...], what: str) -> tuple[str, ...]:
  names = tuple(n.strip() for n in text.split(",") if n.strip())
  bad = [n for n in names if n not in valid]
  if bad or not names:
    raise ValueError(f"unknown {what} {bad or text!r}; expected a "
                     f"comma-separated list from {list(valid)}.")
  return names


def make_config(args: argparse.Namespace) -> Config:
  if args.quick:
    cfg = Config(ratios={"lenet300": (60.0,), "lenet5": (300.0,)}, seeds=1,
                 batch_size=32, base_steps={"lenet300": 60, "lenet5": 30},
                 prune_steps={"lenet300": 60, "lenet5": 30},
                 train_subset=2048, test_subset=512, snip_batch=64)
  else:
    cfg = Config()
  if args.models:
    cfg.models = _names(args.models, tuple(MODELS), "model")
  if args.methods:
    cfg.methods = _names(args.methods, METHODS, "method")
  if args.seeds is not None:
    if args.seeds < 1:
      raise ValueError(f"--seeds must be >= 1, got {args.seeds}.")
    cfg.seeds = args.seeds
  for name, value in (("base-steps", args.base_steps),
                      ("prune-steps", args.prune_steps),
                      ("batch-size", args.batch_size)):
    if value is not None and value < 1:
      raise ValueError(f"--{name} must be >= 1, got {value}.")
  if args.base_steps:
    cfg.base_steps = {m: args.base_steps for m in MODELS}
  if args.prune_steps:
    cfg.prune_steps = {m: args.prune_steps for m in MODELS}
  if args.batch_size:
    cfg.batch_size = args.batch_size
  if "ticket_gsm" in cfg.methods and "gsm" not in cfg.methods:
    raise ValueError("method ticket_gsm needs method gsm (its mask).")
  return cfg


# ----------------------------------------------------------------- data


def load_data(cfg: Config, data_dir: str, quick: bool) -> dict[str, Any]:
  """Fashion-MNIST (or the IDX files in data_dir); digits in --quick if absent."""
  try:
    train, test = datasets.load_idx_dataset(data_dir)
    name = os.path.basename(os.path.normpath(data_dir))
  except FileNotFoundError as e:
    if not quick:
      raise
    print(f"[data] {e}; --quick falls back to scikit-learn digits", flush=True)
    train, test, name = _digits()
  rng = np.random.default_rng(1234)
  if cfg.train_subset and cfg.train_subset < len(train.labels):
    keep = rng.permutation(len(train.labels))[:cfg.train_subset]
    train = datasets.Split(train.images[keep], train.labels[keep])
  if cfg.test_subset and cfg.test_subset < len(test.labels):
    keep = rng.permutation(len(test.labels))[:cfg.test_subset]
    test = datasets.Split(test.images[keep], test.labels[keep])
  x_train = datasets.normalize(train.images)
  mean, std = float((train.images / 255.0).mean()), float(
      (train.images / 255.0).std())
  x_test = datasets.normalize(test.images, mean, std)
  print(f"[data] {name}: {len(x_train)} train, {len(x_test)} test, images "
        f"{x_train.shape[1:]}, mean {mean:.4f} std {std:.4f}", flush=True)
  return dict(name=name, x_train=jnp.asarray(x_train[..., None]),
              y_train=jnp.asarray(train.labels), x_test=jnp.asarray(
                  x_test[..., None]), y_test=jnp.asarray(test.labels))


def _digits() -> tuple[datasets.Split, datasets.Split, str]:
  """scikit-learn's 8x8 digits, upsampled to 28x28 uint8 (offline fallback)."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  images = np.kron(digits.images, np.ones((3, 3))) * (255.0 / 16.0)
  images = np.pad(images, ((0, 0), (2, 2), (2, 2))).astype(np.uint8)
  labels = digits.target.astype(np.int32)
  cut = 1400
  return (datasets.Split(images[:cut], labels[:cut]),
          datasets.Split(images[cut:], labels[cut:]), "sklearn-digits")


# ------------------------------------------------------------- training


def sgd(steps: int, cfg: Config) -> optax.GradientTransformation:
  """Base training, fine-tuning, SNIP and ticket retraining: one recipe."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, cfg.sgd_lr, max(1, steps // 20), steps, cfg.sgd_lr * 0.01)
  return optax.chain(optax.add_decayed_weights(cfg.sgd_weight_decay),
                     optax.sgd(schedule, momentum=cfg.sgd_momentum))


def gsm_schedule(steps: int, cfg: Config) -> optax.Schedule:
  """Linear warm-up from 0 (5%), constant, then x0.1 for the last 20%."""
  warmup = max(1, steps // 20)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, cfg.gsm_lr, warmup),
       optax.piecewise_constant_schedule(
           cfg.gsm_lr, {max(1, int(0.8 * steps) - warmup): 0.1})],
      [warmup])


def gsm_weight_decay(steps: int, cfg: Config) -> float:
  """eta with sum_k lr_k * eta / (1 - beta) = cfg.gsm_decay_exponent."""
  lr_sum = float(sum(gsm_schedule(steps, cfg)(k) for k in range(steps)))
  return cfg.gsm_decay_exponent * (1 - cfg.gsm_momentum) / lr_sum


class Trainer:
  """Jitted train steps (a Python loop; lax.scan over conv nets is far slower
  on XLA:CPU), compiled once per (model, phase)."""

  def __init__(self, model: Any, data: dict[str, Any], cfg: Config):
    self.model, self.data, self.cfg = model, data, cfg
    self._compiled: dict[Any, Any] = {}
    self.compile_s = 0.0
    self._pending_compile = 0.0

    def loss_fn(params, x, y):
      logits = model.apply(params, x)
      return optax.losses.softmax_cross_entropy_with_integer_labels(
          logits, y).mean()

    self.loss_fn = loss_fn

    @jax.jit
    def evaluate(params, x, y):
      return jnp.sum(jnp.argmax(model.apply(params, x), -1) == y)

    self._evaluate = evaluate

  def call(self, key: Any, fn: Any, *args: Any) -> Any:
    """Runs ``jax.jit(fn)(*args)``, compiled once per ``key``; compile time
    goes to ``self.compile_s``, not to the caller's wall time."""
    if key not in self._compiled:
      t0 = time.perf_counter()
      self._compiled[key] = jax.jit(fn).lower(*args).compile()
      self.compile_s += time.perf_counter() - t0
      self._pending_compile += time.perf_counter() - t0
    return self._compiled[key](*args)

  def timed(self, fn: Any) -> tuple[Any, float]:
    """Calls ``fn()``; returns its result and wall seconds less compile time."""
    self._pending_compile = 0.0
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0 - self._pending_compile

  def _step_fn(self, make_opt):
    loss_fn = self.loss_fn

    def step(params, opt_state, masks, x_all, y_all, idx):
      opt = make_opt(masks)
      loss, grads = jax.value_and_grad(loss_fn)(params, x_all[idx], y_all[idx])
      updates, opt_state = opt.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    return step

  def train(self, key: Any, make_opt: Any, params: Any, steps: int,
            rng: np.random.Generator, label: str, masks: Any = None
            ) -> tuple[Any, Any, float]:
    """Trains ``steps`` jitted steps; returns params, optimizer state and wall
    seconds (compilation excluded).

    ``make_opt(masks)`` builds the optimizer; ``key`` names it for the
    compilation cache, so masks are arguments, not constants.
    """
    x_all, y_all = self.data["x_train"], self.data["y_train"]
    idx = rng.integers(0, len(y_all), (steps, self.cfg.batch_size)).astype(
        np.int32)
    step = self._step_fn(make_opt)
    marks = {max(1, steps // 2), steps}

    def run():
      p, s = params, make_opt(masks).init(params)
      start = time.perf_counter()
      for i in range(steps):
        p, s, loss = self.call(("train", key), step, p, s, masks, x_all,
                               y_all, idx[i])
        if i + 1 in marks:
          print(f"    {label}: step {i + 1}/{steps} loss {float(loss):.4f} "
                f"({time.perf_counter() - start - self._pending_compile:.1f}s)",
                flush=True)
      return p, s

    (params, opt_state), wall = self.timed(run)
    return params, opt_state, wall

  def accuracy(self, params: Any) -> float:
    x, y = self.data["x_test"], self.data["y_test"]
    correct = 0
    for i in range(0, len(y), 1000):
      correct += int(self._evaluate(params, x[i:i + 1000], y[i:i + 1000]))
    return correct / len(y)


def layer_density(params_or_masks: Any) -> dict[str, float]:
  report = optax_gsm.sparsity_report(params_or_masks)
  return {leaf.path.removeprefix("params/").removesuffix("/kernel"):
          leaf.density for leaf in report.leaves}


def run_model(model_name: str, seed: int, data: dict[str, Any], cfg: Config,
              gsm_etas: dict[str, float], trainers: dict[str, Trainer]
              ) -> list[dict[str, Any]]:
  """One model, one seed: the base, then every method at every ratio."""
  pretty, factory = MODELS[model_name]
  model = factory()
  if model_name not in trainers:  # one per model: compiled steps are reused
    trainers[model_name] = Trainer(model, data, cfg)
  trainer = trainers[model_name]
  B, K = cfg.base_steps[model_name], cfg.prune_steps[model_name]
  rng = np.random.default_rng(seed)
  init = model.init(jax.random.key(seed), data["x_train"][:1])
  pool = sum(x.size for x in jax.tree.leaves(init) if x.ndim >= 2)
  tag = f"[{model_name} seed {seed}]"
  print(f"{tag} dense base: {B} steps, pool {pool:,} weights", flush=True)
  base_opt = lambda _: sgd(B, cfg)
  base, _, base_s = trainer.train(("base", B), base_opt, init, B, rng,
                                  f"{tag} base")
  dense_acc = trainer.accuracy(base)
  print(f"{tag} dense accuracy {dense_acc:.4f} ({base_s:.1f}s)", flush=True)
  rows = []

  def record(method, ratio, params, masks, wall, **extra):
    kept = optax_gsm.sparsity_report(masks).kept
    nonzero = optax_gsm.sparsity_report(params).kept
    acc = trainer.accuracy(params)
    row = dict(model=model_name, model_name=pretty, seed=seed, method=method,
               compression=ratio, dense_acc=dense_acc, acc=acc,
               target_kept=math.floor(pool / ratio), kept=kept,
               nonzero=nonzero, pool=pool, density=kept / pool,
               layer_density=layer_density(masks), wall_s=wall,
               base_steps=B, prune_steps=K, **extra)
    rows.append(row)
    print(f"{tag} {method:16s} {ratio:5.0f}x  acc {acc:.4f}  kept {kept:,}"
          f"/{pool:,}  ({wall:.1f}s)", flush=True)

  masked_sgd = lambda steps: (lambda m: optax.chain(sgd(steps, cfg),
                                                    optax_gsm.keep_masked(m)))
  for ratio in cfg.ratios[model_name]:
    prune = lambda p, r=ratio: optax_gsm.prune(p, r)
    gsm_params = None
    if "gsm" in cfg.methods:
      eta = gsm_etas[model_name]
      make = lambda _, r=ratio: optax_gsm.gsm_sgd(
          gsm_schedule(K, cfg), r, momentum=cfg.gsm_momentum,
          weight_decay=eta, weight_decay_mask=optax_gsm.default_prunable)
      trained, _, wall = trainer.train(("gsm", ratio, K), make, base, K, rng,
                                       f"{tag} gsm {ratio:.0f}x")
      near_sparse_acc = trainer.accuracy(trained)
      (gsm_params, masks), prune_s = trainer.timed(
          lambda: trainer.call(("prune", ratio), prune, trained))
      removed = [float(jnp.max(jnp.abs(jnp.where(m, 0.0, w)))) for m, w in zip(
          jax.tree.leaves(masks, is_leaf=lambda x: x is None),
          jax.tree.leaves(trained)) if m is not None]
      record("gsm", ratio, gsm_params, masks, wall + prune_s,
             acc_before_hard_prune=near_sparse_acc,
             max_abs_removed=max(removed), weight_decay=eta)
    if "magnitude_ft" in cfg.methods:
      (pruned, masks), prune_s = trainer.timed(
          lambda: trainer.call(("prune", ratio), prune, base))
      one_shot_acc = trainer.accuracy(pruned)
      tuned, _, wall = trainer.train(("ft", K), masked_sgd(K), pruned, K, rng,
                                     f"{tag} magnitude_ft {ratio:.0f}x",
                                     masks=masks)
      record("magnitude_ft", ratio, tuned, masks, wall + prune_s,
             acc_one_shot_no_ft=one_shot_acc)
    for method, scope in (("gmp", "global"), ("gmp_layer", "layer")):
      if method not in cfg.methods:
        continue
      end = max(1, int(0.75 * K))
      make = lambda _, r=ratio, s=scope: optax.chain(
          sgd(K, cfg), optax_gsm.gmp(1 / r, begin_step=0, end_step=end,
                                     update_every=max(1, end // 20), scope=s))
      tuned, state, wall = trainer.train((method, ratio, K), make, base, K,
                                         rng, f"{tag} {method} {ratio:.0f}x")
      record(method, ratio, tuned, state[1].masks, wall)
    if "weightmom" in cfg.methods:
      every = max(1, K // WEIGHTMOM["checks_per_k"])
      # Same ramp as gmp, cut short only where K is too small (--quick) for
      # the exact final count to be enforced before step K.
      end = max(1, min(int(0.75 * K), K - 1 - WEIGHTMOM["window"] * every))
      make = lambda _, r=ratio, e=end, c=every: optax.chain(
          sgd(K, cfg), optax_gsm.weightmom(
              1 / r, begin_step=0, end_step=e, check_every=c,
              window=WEIGHTMOM["window"], min_below=WEIGHTMOM["min_below"]))
      tuned, state, wall = trainer.train(("weightmom", ratio, K), make, base,
                                         K, rng, f"{tag} weightmom {ratio:.0f}x")
      record("weightmom", ratio, tuned, state[1].masks, wall,
             weightmom_end_step=end, weightmom_check_every=every)
    if "snip" in cfg.methods:
      pick = rng.integers(0, len(data["y_train"]), cfg.snip_batch)
      batch = (data["x_train"][pick], data["y_train"][pick])
      snip = lambda p, b, r=ratio: optax_gsm.snip_masks(
          lambda q, c: trainer.loss_fn(q, *c), p, b, r)
      masks, snip_s = trainer.timed(
          lambda: trainer.call(("snip_masks", ratio), snip, init, batch))
      tuned, _, wall = trainer.train(
          ("snip", B + K), masked_sgd(B + K),
          optax_gsm.apply_masks(init, masks), B + K, rng,
          f"{tag} snip {ratio:.0f}x", masks=masks)
      record("snip", ratio, tuned, masks, wall + snip_s)
    for method, trained in (("ticket_gsm", gsm_params),
                            ("ticket_magnitude", base)):
      if method not in cfg.methods:
        continue
      ticket_fn = lambda i, t, r=ratio: optax_gsm.lottery_ticket(i, t, r)
      (ticket, masks), mask_s = trainer.timed(
          lambda: trainer.call(("ticket", ratio), ticket_fn, init, trained))
      tuned, _, wall = trainer.train(("ticket", B), masked_sgd(B), ticket, B,
                                     rng, f"{tag} {method} {ratio:.0f}x",
                                     masks=masks)
      record(method, ratio, tuned, masks, wall + mask_s)
  print(f"{tag} done; compile time so far {trainer.compile_s:.1f}s (not "
        "counted)",
        flush=True)
  return rows


# -------------------------------------------------------------- reports


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Mean and std over seeds for each (model, compression, method)."""
  groups: dict[Any, list[dict[str, Any]]] = {}
  for r in rows:
    groups.setdefault((r["model"], r["compression"], r["method"]), []).append(r)
  order = {m: i for i, m in enumerate(METHODS)}
  out = []
  for (model, ratio, method), rs in sorted(
      groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order[kv[0][2]])):
    stat = lambda k: (float(np.mean([r[k] for r in rs])),
                      float(np.std([r[k] for r in rs])))
    layers = {k: float(np.mean([r["layer_density"][k] for r in rs]))
              for k in rs[0]["layer_density"]}
    out.append(dict(
        model=model, model_name=rs[0]["model_name"], compression=ratio,
        method=method, seeds=len(rs), dense_acc=stat("dense_acc"),
        acc=stat("acc"), wall_s=stat("wall_s"), density=rs[0]["density"],
        exact_density=all(r["kept"] == r["target_kept"] for r in rs),
        layer_density=layers))
  return out


def _pm(stat: tuple[float, float], scale: float = 100.0, digits: int = 2
        ) -> str:
  return f"{scale * stat[0]:.{digits}f} ± {scale * stat[1]:.{digits}f}"


def table(summary: list[dict[str, Any]]) -> str:
  head = ("| method | model | compression | dense acc (%) | pruned acc (%) | "
          "per-layer density (%) | wall (s) |")
  lines = [head, "|---|---|---|---|---|---|---|"]
  for s in summary:
    layers = " / ".join(f"{100 * d:.2f}" for d in s["layer_density"].values())
    lines.append(
        f"| {s['method']} | {s['model_name']} | {s['compression']:.0f}x | "
        f"{_pm(s['dense_acc'])} | {_pm(s['acc'])} | {layers} | "
        f"{_pm(s['wall_s'], 1.0, 1)} |")
  return "\n".join(lines)


def claims(summary: list[dict[str, Any]]) -> list[str]:
  """The paper's claims, checked on these numbers (means over seeds)."""
  by = {(s["model"], s["compression"], s["method"]): s for s in summary}
  out = []
  for model, ratio in (("lenet300", 60.0), ("lenet5", 125.0)):
    s = by.get((model, ratio, "gsm"))
    if s:
      gap = 100 * (s["dense_acc"][0] - s["acc"][0])
      out.append(f"- GSM within 1.0 point of dense, {s['model_name']} "
                 f"{ratio:.0f}x, no fine-tuning: "
                 f"{'yes' if gap <= 1.0 else 'NO'} (dense - GSM = "
                 f"{gap:.2f} points)")
  ticket_gaps = {}
  for (model, ratio, method), s in sorted(by.items()):
    if method != "gsm":
      continue
    base = [by[(model, ratio, b)] for b in BASELINES
            if (model, ratio, b) in by]
    if base:
      best = max(base, key=lambda b: b["acc"][0])
      diff = 100 * (s["acc"][0] - best["acc"][0])
      out.append(f"- GSM >= best baseline, {s['model_name']} {ratio:.0f}x: "
                 f"{'yes' if diff >= 0 else 'NO'} (GSM {_pm(s['acc'])}, best "
                 f"{best['method']} {_pm(best['acc'])}, {diff:+.2f} points)")
    tg, tm = by.get((model, ratio, "ticket_gsm")), by.get(
        (model, ratio, "ticket_magnitude"))
    if tg and tm:
      diff = 100 * (tg["acc"][0] - tm["acc"][0])
      ticket_gaps[(model, ratio)] = diff
      out.append(f"- GSM ticket >= magnitude ticket, {s['model_name']} "
                 f"{ratio:.0f}x: {'yes' if diff >= 0 else 'NO'} "
                 f"({_pm(tg['acc'])} vs {_pm(tm['acc'])}, {diff:+.2f} points)")
  if ticket_gaps:
    widest = max(ticket_gaps, key=ticket_gaps.get)
    out.append(f"- Largest ticket gap at {widest[1]:.0f}x ({widest[0]}): "
               f"{'yes' if widest[1] == 300.0 else 'NO'} (gaps: " + ", ".join(
                   f"{m} {r:.0f}x {g:+.2f}" for (m, r), g in
                   sorted(ticket_gaps.items())) + ")")
  for (model, ratio, method), s in sorted(by.items()):
    if method == "gsm":
      layers = ", ".join(f"{k} {100 * d:.2f}%"
                         for k, d in s["layer_density"].items())
      out.append(f"- GSM per-layer density, {s['model_name']} {ratio:.0f}x "
                 f"(uniform would be {100 / ratio:.2f}% each): {layers}")
  return out


def plot(summary: list[dict[str, Any]], out_dir: str, prefix: str
         ) -> list[str]:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  model_names = sorted({s["model"] for s in summary})
  paths = []
  fig, axes = plt.subplots(1, len(model_names),
                           figsize=(5.5 * len(model_names), 4), squeeze=False)
  for ax, model in zip(axes[0], model_names):
    rows = [s for s in summary if s["model"] == model]
    for method in METHODS:
      pts = sorted((s["compression"], s["acc"]) for s in rows
                   if s["method"] == method)
      if pts:
        ax.errorbar([p[0] for p in pts], [100 * p[1][0] for p in pts],
                    [100 * p[1][1] for p in pts], marker="o", capsize=3,
                    label=method)
    ax.axhline(100 * rows[0]["dense_acc"][0], color="k", ls="--", lw=1,
               label="dense")
    ax.set_xscale("log")
    ratios = sorted({s["compression"] for s in rows})
    ax.set_xticks(ratios, [f"{r:g}x" for r in ratios])
    ax.minorticks_off()
    ax.set_xlabel("compression (total / kept)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(rows[0]["model_name"])
    ax.legend(fontsize=7)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, f"{prefix}_accuracy.png"))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)

  panels = sorted({(s["model"], s["compression"]) for s in summary})
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4),
                           squeeze=False)
  for ax, (model, ratio) in zip(axes[0], panels):
    rows = {s["method"]: s for s in summary
            if s["model"] == model and s["compression"] == ratio}
    shown = [m for m in ("gsm", "magnitude_ft", "snip") if m in rows]
    if not shown:
      continue
    layers = list(rows[shown[0]]["layer_density"])
    width = 0.8 / (len(shown) + 1)
    xs = np.arange(len(layers))
    for i, method in enumerate(shown):
      ax.bar(xs + i * width, [100 * rows[method]["layer_density"][k]
                              for k in layers], width, label=method)
    ax.bar(xs + len(shown) * width, [100 / ratio] * len(layers), width,
           label="uniform", color="gray")
    ax.set_xticks(xs + width * len(shown) / 2)
    ax.set_xticklabels(layers, rotation=20, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("density (%)")
    ax.set_title(f"{next(iter(rows.values()))['model_name']} {ratio:.0f}x")
    ax.legend(fontsize=7)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, f"{prefix}_density.png"))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)
  return paths


def write_doc(path: str, block: str) -> None:
  """Replaces the table block of ``path`` (or creates the file)."""
  block = f"{TABLE_BEGIN}\n{block}\n{TABLE_END}"
  text = open(path).read() if os.path.exists(path) else ""
  if TABLE_BEGIN in text and TABLE_END in text:
    head, rest = text.split(TABLE_BEGIN, 1)
    text = head + block + rest.split(TABLE_END, 1)[1]
  else:
    text = text + ("\n" if text else "") + block + "\n"
  with open(path, "w") as f:
    f.write(text)


def report(rows, cfg, data_name, gsm_etas, out_dir, prefix, doc, command,
           done) -> dict[str, Any]:
  summary = summarize(rows)
  result = dict(command=command, data=data_name, complete=done,
                config=dataclasses.asdict(cfg), gsm_weight_decay=gsm_etas,
                summary=summary, claims=claims(summary), rows=rows,
                devices=str(jax.devices()))
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, f"{prefix}.json"), "w") as f:
    json.dump(result, f, indent=1)
  if done:
    result["plots"] = plot(summary, out_dir, prefix)
    text = table(summary)
    print("\n" + text + "\n\nClaims check:\n" + "\n".join(result["claims"]),
          flush=True)
    if doc:
      steps = ", ".join(f"{m}: base {cfg.base_steps[m]}, K {cfg.prune_steps[m]}"
                        for m in cfg.models)
      write_doc(doc, f"Command: `{command}` on {data_name}; {cfg.seeds} "
                f"seed(s), batch {cfg.batch_size}, steps ({steps}); "
                "mean ± std over seeds; wall time excludes compilation.\n\n"
                + text + "\n\nClaims check (means over seeds):\n\n"
                + "\n".join(result["claims"]))
  return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  cfg = make_config(args)
  prefix = "paper_quick" if args.quick else "paper"
  doc = args.doc if args.doc is not None else (
      None if args.quick else os.path.join(ROOT, "docs", "evidence.md"))
  command = " ".join(["python benchmarks/paper.py",
                      *(sys.argv[1:] if argv is None else argv)])
  if args.summarize:
    with open(args.summarize) as f:
      saved = json.load(f)
    for key, value in saved["config"].items():
      setattr(cfg, key, tuple(value) if isinstance(value, list) else value)
    seeds = {r["seed"] for r in saved["rows"]}
    cfg.seeds = len(seeds)
    return report(saved["rows"], cfg, saved["data"], saved["gsm_weight_decay"],
                  args.out_dir, prefix, doc, saved["command"].strip() + (
                      "" if saved["complete"] else
                      f" (stopped early: seeds {sorted(seeds)} finished)"),
                  done=True)
  data = load_data(cfg, args.data_dir, args.quick)
  gsm_etas = {m: gsm_weight_decay(cfg.prune_steps[m], cfg) for m in cfg.models}
  for m in cfg.models:
    print(f"[gsm] {m}: K = {cfg.prune_steps[m]} steps, lr {cfg.gsm_lr} "
          f"(warm-up, x0.1 at 80%), beta {cfg.gsm_momentum}, weight decay "
          f"{gsm_etas[m]:.3g}: sum(lr) * eta / (1 - beta) = "
          f"{cfg.gsm_decay_exponent} (passive |w| x{math.exp(-cfg.gsm_decay_exponent):.1e})",
          flush=True)
  rows: list[dict[str, Any]] = []
  trainers: dict[str, Trainer] = {}
  t0 = time.perf_counter()
  for seed in range(cfg.seeds):
    for model_name in cfg.models:
      rows += run_model(model_name, seed, data, cfg, gsm_etas, trainers)
      report(rows, cfg, data["name"], gsm_etas, args.out_dir, prefix, doc,
             command, done=False)
      print(f"[progress] {model_name} seed {seed} finished at "
            f"{time.perf_counter() - t0:.0f}s", flush=True)
  return report(rows, cfg, data["name"], gsm_etas, args.out_dir, prefix, doc,
                command, done=True)


if __name__ == "__main__":
  main()
