"""Why GSM's hard prune loses accuracy, and which variant ends lossless.

LeNet-300-100 on Fashion-MNIST, 55,000 train / 5,000 validation (carved from
the training set), the official code's lottery-ticket schedules times
``--scale``, an epoch as one jitted ``lax.scan``. GSM is written out here with
its masks in the open (the library's ``top_k_masks``), so that every step's
active set can be compared with the last. Per GSM epoch it records:

* how many pooled weights exceed 1e-2, 1e-3, 1e-4 times their layer's RMS;
* the share of the pooled squared norm outside the magnitude top-Q (what the
  hard prune would remove now);
* active-set churn: the share of the Q active entries replaced per step
  (mean over the epoch) and per epoch; how many entries were ever active;
* how much of the magnitude top-Q lies outside the last active set;
* every 10 epochs, validation accuracy before and after a hard prune by
  magnitude and by the last active set.

Variants: ``paper`` (the paper's rule), ``emaX`` (rank by a moving average of
the score, decay X), ``freeze1`` (hard prune at the first learning-rate decay,
mask held), and combinations. Results and the choice: docs/lossless.md.

  python benchmarks/gsm_diagnosis.py --scale 0.5 --variants paper,ema99,freeze1
  python benchmarks/gsm_diagnosis.py --plot benchmarks/results/diagnosis/*.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_gsm
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples.common import datasets, models  # pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(val=5000, seed=1234):
  train, test = datasets.load_idx_dataset(datasets.FASHION_MNIST_DIR)
  perm = np.random.default_rng(seed).permutation(len(train.labels))
  tr, va = perm[val:], perm[:val]
  x = datasets.normalize(train.images)
  mean, std = float((train.images / 255.).mean()), float((train.images / 255.).std())
  xt = datasets.normalize(test.images, mean, std)
  f = lambda a: jnp.asarray(a.reshape(len(a), -1))
  return dict(x=f(x[tr]), y=jnp.asarray(train.labels[tr]), xv=f(x[va]),
              yv=jnp.asarray(train.labels[va]), xt=f(xt),
              yt=jnp.asarray(test.labels))


def step_schedule(lr, epochs, drops, spe, warm=5):
  bounds = {d * spe: 0.1 for d in drops}
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warm * spe),
       optax.piecewise_constant_schedule(lr, {k - warm * spe: v for k, v in bounds.items()})],
      [warm * spe])


MODEL = models.lenet_300_100()


def loss_fn(p, x, y):
  return optax.losses.softmax_cross_entropy_with_integer_labels(
      MODEL.apply(p, x), y).mean()


@jax.jit
def correct(p, x, y):
  return jnp.sum(jnp.argmax(MODEL.apply(p, x), -1) == y)


def acc(p, x, y):
  return float(correct(p, x, y)) / len(y)


def pool_of(tree):
  return jax.tree.map(lambda a: a.ndim >= 2, tree)


def train_base(d, seed, epochs, bs=256):
  drops = [int(epochs * f) for f in (0.2, 0.4, 0.6, 0.8)]
  spe = len(d["y"]) // bs
  sched = step_schedule(3e-2, epochs, drops, spe)
  opt = optax.chain(optax.add_decayed_weights(5e-4, mask=optax_gsm.default_prunable),
                    optax.trace(0.9), optax.scale_by_learning_rate(sched))
  params = MODEL.init(jax.random.key(seed), d["x"][:1])
  init = params
  st = opt.init(params)

  @jax.jit
  def epoch(params, st, key):
    idx = jax.random.permutation(key, len(d["y"]))[:spe * bs].reshape(spe, bs)
    def body(c, i):
      p, s = c
      g = jax.grad(loss_fn)(p, d["x"][i], d["y"][i])
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    (params, st), _ = jax.lax.scan(body, (params, st), idx)
    return params, st

  key = jax.random.key(seed + 1000)
  for e in range(epochs):
    key, k = jax.random.split(key)
    params, st = epoch(params, st, k)
  return init, params


def gsm_run(d, base, seed, epochs, ratio, variant, bs=256, log=print):
  """variant: dict(ema=0.0, freeze=None(epoch), freeze_from='magnitude')."""
  drops = [int(epochs * f) for f in (160 / 280, 200 / 280, 240 / 280)]
  spe = len(d["y"]) // bs
  sched = step_schedule(1e-2, epochs, drops, spe)
  wd, beta = variant.get("wd", 5e-4), variant.get("beta", 0.99)
  rho = variant.get("ema", 0.0)
  freeze = variant.get("freeze")
  freeze_step = None if freeze is None else freeze * spe
  opt = optax.chain(optax.add_decayed_weights(wd, mask=optax_gsm.default_prunable),
                    optax.trace(beta, nesterov=True),
                    optax.scale_by_learning_rate(sched))
  params = base
  flags = pool_of(params)
  leaves = jax.tree.leaves(params)
  N = sum(x.size for x in leaves if x.ndim >= 2)
  Q = math.floor(N / ratio)
  kern = lambda t: [x for x in jax.tree.leaves(t) if x.ndim >= 2]
  scale = [float(jnp.sqrt(jnp.mean(w ** 2))) for w in kern(base)]
  st = opt.init(params)
  zeros_b = jax.tree.map(lambda a: jnp.zeros(a.shape, bool), params)
  zeros_f = jax.tree.map(jnp.zeros_like, params)
  carry0 = dict(prev=zeros_b, ever=zeros_b, ema=zeros_f, frozen=zeros_b,
                count=jnp.zeros((), jnp.int32))

  def select(scores):
    ms = optax_gsm.top_k_masks(kern(scores), Q)
    it = iter(ms)
    return jax.tree.map(lambda a: next(it) if a.ndim >= 2 else jnp.ones(a.shape, bool), scores)

  def mag_mask(p):
    return select(jax.tree.map(jnp.abs, p))

  @jax.jit
  def epoch(params, st, c, key):
    idx = jax.random.permutation(key, len(d["y"]))[:spe * bs].reshape(spe, bs)
    def body(carry, i):
      p, s, c = carry
      g = jax.grad(loss_fn)(p, d["x"][i], d["y"][i])
      t = jax.tree.map(lambda a, b: jnp.abs(a * b), g, p)
      ema = jax.tree.map(lambda e, x: rho * e + (1 - rho) * x, c["ema"], t)
      ema = jax.lax.cond(c["count"] == 0, lambda: t, lambda: ema) if rho > 0 else t
      mask = select(ema)
      if freeze_step is not None:
        frozen = jax.lax.cond(c["count"] == freeze_step, lambda: mag_mask(p),
                              lambda: c["frozen"])
        after = c["count"] >= freeze_step
        mask = jax.tree.map(lambda a, b: jnp.where(after, b, a), mask, frozen)
        p = jax.tree.map(lambda w, m: jnp.where(after & ~m, 0.0, w), p, frozen)
        s = jax.tree.map(lambda z: z, s)
        c = dict(c, frozen=frozen)
      gm = jax.tree.map(lambda a, m: jnp.where(m, a, 0.0), g, mask)
      u, s = opt.update(gm, s, p)
      p = optax.apply_updates(p, u)
      if freeze_step is not None:
        after = c["count"] >= freeze_step
        p = jax.tree.map(lambda w, m: jnp.where(after & ~m, 0.0, w), p, c["frozen"])
      kchange = sum(jnp.sum(m & ~q) for m, q in zip(kern(mask), kern(c["prev"])))
      c = dict(c, prev=mask, ever=jax.tree.map(jnp.logical_or, c["ever"], mask),
               ema=ema, count=c["count"] + 1)
      return (p, s, c), kchange
    (params, st, c), ch = jax.lax.scan(body, (params, st, c), idx)
    return params, st, c, ch

  @jax.jit
  def diag(params, c, prev_epoch_mask):
    ks = kern(params)
    counts = {f"above_{t:g}": sum(jnp.sum(jnp.abs(w) > t * sc) for w, sc in zip(ks, scale))
              for t in (1e-2, 1e-3, 1e-4)}
    mm = mag_mask(params)
    tot = sum(jnp.sum(w.astype(jnp.float32) ** 2) for w in ks)
    out = sum(jnp.sum(jnp.where(m, 0.0, w) ** 2) for w, m in zip(ks, kern(mm)))
    act = kern(c["prev"])
    disagree = sum(jnp.sum(m & ~a) for m, a in zip(kern(mm), act))
    ep_churn = sum(jnp.sum(a & ~b) for a, b in zip(act, kern(prev_epoch_mask)))
    ever = sum(jnp.sum(e) for e in kern(c["ever"]))
    pruned = jax.tree.map(lambda w, m: jnp.where(m, w, 0.0), params, mm)
    act_pruned = jax.tree.map(lambda w, m: jnp.where(m, w, 0.0), params, c["prev"])
    return dict(counts, residual=out / tot, disagree=disagree / Q,
                epoch_churn=ep_churn / Q, ever=ever), pruned, act_pruned

  key = jax.random.key(seed + 2000)
  hist = []
  prev_epoch_mask = zeros_b
  c = carry0
  t0 = time.time()
  for e in range(epochs):
    key, k = jax.random.split(key)
    params, st, c, ch = epoch(params, st, c, k)
    dg, pruned, act_pruned = diag(params, c, prev_epoch_mask)
    prev_epoch_mask = c["prev"]
    row = {k: float(v) for k, v in dg.items()}
    row.update(epoch=e + 1, step_churn=float(jnp.mean(ch[1:] if e == 0 else ch)) / Q,
               lr=float(sched((e + 1) * spe - 1)))
    if (e + 1) % variant.get("eval_every", 10) == 0 or e + 1 == epochs:
      row.update(val=acc(params, d["xv"], d["yv"]),
                 val_pruned=acc(pruned, d["xv"], d["yv"]),
                 val_active_pruned=acc(act_pruned, d["xv"], d["yv"]))
      log(f"  ep {e+1:3d} lr {row['lr']:.0e} val {row['val']:.4f} pruned {row['val_pruned']:.4f} "
          f"act-pruned {row['val_active_pruned']:.4f} resid {row['residual']:.2e} "
          f"churn/step {row['step_churn']:.4f} /ep {row['epoch_churn']:.3f} ever {row['ever']/Q:.2f}Q "
          f"dis {row['disagree']:.3f} >1e-2 {row['above_0.01']/Q:.2f}Q >1e-4 {row['above_0.0001']/Q:.2f}Q "
          f"({time.time()-t0:.0f}s)")
    hist.append(row)
  final = dict(val=acc(params, d["xv"], d["yv"]), val_pruned=acc(pruned, d["xv"], d["yv"]),
               test=acc(params, d["xt"], d["yt"]), test_pruned=acc(pruned, d["xt"], d["yt"]),
               nonzero=int(sum(jnp.sum(w != 0) for w in kern(pruned))), Q=Q)
  return final, hist, params


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--scale", type=float, default=0.5)
  ap.add_argument("--ratio", type=float, default=60)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--variants", default="paper")
  ap.add_argument("--out", default="runs",
                  help="folder for the result files (default: ./runs)")
  ap.add_argument("--base-only", action="store_true")
  ap.add_argument("--plot", nargs="+", default=None,
                  help="plot these result files to benchmarks/results/"
                  "diagnosis.png and print their table; train nothing")
  a = ap.parse_args()
  if a.plot:
    plot(a.plot, os.path.join(ROOT, "benchmarks", "results", "diagnosis.png"))
    print("| variant | dense val | val before prune | val after | test after "
          "| churn/step (last epoch) | ever active / Q |")
    print("|---|---|---|---|---|---|---|")
    for path in a.plot:
      r = json.load(open(path))
      f, h = r["final"], r["history"][-1]
      print(f"| {r['variant']} | {100 * r['dense']['val']:.2f} | "
            f"{100 * f['val']:.2f} | {100 * f['val_pruned']:.2f} | "
            f"{100 * f['test_pruned']:.2f} | {h['step_churn']:.2e} | "
            f"{h['ever'] / f['Q']:.2f} |")
    return
  os.makedirs(a.out, exist_ok=True)
  d = load()
  base_epochs, gsm_epochs = round(200 * a.scale), round(280 * a.scale)
  bpath = f"{a.out}/base_s{a.seed}_e{base_epochs}.npz"
  if os.path.exists(bpath):
    z = np.load(bpath, allow_pickle=True)
    base = jax.tree.map(jnp.asarray, z["base"].item())
  else:
    t0 = time.time()
    init, base = train_base(d, a.seed, base_epochs)
    print(f"base {base_epochs} ep: val {acc(base, d['xv'], d['yv']):.4f} "
          f"({time.time()-t0:.0f}s)", flush=True)
    np.savez(bpath, base=np.array(jax.tree.map(np.asarray, base), dtype=object),
             init=np.array(jax.tree.map(np.asarray, init), dtype=object))
  dense = dict(val=acc(base, d["xv"], d["yv"]), test=acc(base, d["xt"], d["yt"]))
  print("dense", dense, flush=True)
  if a.base_only:
    return
  VARIANTS = {
      "paper": {},
      "ema9": dict(ema=0.9), "ema9_freeze1": dict(ema=0.9, freeze=round(160 * a.scale)), "ema99": dict(ema=0.99), "ema999": dict(ema=0.999),
      "freeze1": dict(freeze=round(160 * a.scale)),
      "freeze2": dict(freeze=round(200 * a.scale)),
      "freeze3": dict(freeze=round(240 * a.scale)),
      "ema99_freeze1": dict(ema=0.99, freeze=round(160 * a.scale)),
      "ema99_freeze2": dict(ema=0.99, freeze=round(200 * a.scale)),
      "ema999_freeze1": dict(ema=0.999, freeze=round(160 * a.scale)),
  }
  for name in a.variants.split(","):
    v = VARIANTS[name]
    print(f"== {name} {v} ratio {a.ratio} seed {a.seed} scale {a.scale}", flush=True)
    t0 = time.time()
    final, hist, _ = gsm_run(d, base, a.seed, gsm_epochs, a.ratio, v,
                             log=lambda s: print(s, flush=True))
    final.update(wall=time.time() - t0)
    print(f"== {name}: {final}", flush=True)
    with open(f"{a.out}/{name}_r{a.ratio:g}_s{a.seed}_x{a.scale:g}.json",
              "w") as f:
      json.dump(dict(variant=name, config=v, ratio=a.ratio, seed=a.seed, scale=a.scale,
                     dense=dense, final=final, history=hist), f)



def plot(paths, out_png):
  """Diagnostics over training, one line per variant (docs/lossless.md)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  runs = [json.load(open(p)) for p in paths]
  panels = [("step_churn", "active-set churn per step\n(share of Q replaced)", "log"),
            ("ever", "entries ever active / Q", "linear"),
            ("residual", "share of squared norm outside\nmagnitude top-Q (prune removes)", "log"),
            ("above_0.01", "weights with |w| > 1e-2 x layer RMS, / Q", "linear"),
            ("disagree", "magnitude top-Q not in last\nactive set (share of Q)", "linear"),
            ("val_pruned", "validation accuracy after\nhard prune", "linear")]
  fig, axes = plt.subplots(2, 3, figsize=(15, 8))
  for ax, (key, title, scale) in zip(axes.ravel(), panels):
    for r in runs:
      h = [x for x in r["history"] if key in x]
      q = r["final"]["Q"]
      ys = [x[key] / (q if key in ("ever", "above_0.01") else 1) for x in h]
      ax.plot([x["epoch"] for x in h], ys, label=r["variant"],
              marker="." if key.startswith("val") else None)
    ax.set_yscale(scale)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("GSM epoch")
  axes[0, 0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)


if __name__ == "__main__":
  main()
