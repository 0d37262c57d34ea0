"""The GSM update's stages, and two candidate speed-ups, timed side by side.

Where the time of ``optax_gsm.gsm`` goes on this backend, and whether two
ideas would cut it, with every variant's masks checked bit for bit
against the library's:

* ``top_digit_reuse``: keep the previous step's top 16-bit digit of the
  threshold key; two reductions count the keys whose top digit lies above it
  and at it; when those counts still bracket Q (an exact check), the first
  histogram pass is skipped, and a ``lax.cond`` runs it otherwise.
* ``row_counts``: the per-leaf active counts as float32 sums of rows of 4096
  (exact) instead of one ``uint32`` reduction per leaf.

Reuse only pays on steps where the top digit repeats, so the script also
measures that rate in training: LeNet-300-100 on Fashion-MNIST (when the IDX
files are installed) from a random init, ``gsm_sgd`` at 60x, batch 256, the
paper's lr 1e-2 and momentum 0.99 (no lr decay).

Each stage row recomputes the keys it needs; stages do not add up.

  python benchmarks/update_variants.py            # 25.6M, ~2 min on 2 cores
  python benchmarks/update_variants.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=wrong-import-position
import optax_gsm  # pylint: disable=wrong-import-position
from optax_gsm import _pool  # pylint: disable=wrong-import-position
from optax_gsm import _selection  # pylint: disable=wrong-import-position
from examples.common import datasets  # pylint: disable=wrong-import-position
from examples.common import models  # pylint: disable=wrong-import-position

_DIGIT = 16  # the radix select's digit width (optax_gsm._selection)
_ROW = 4096  # float32 sums of 0/1 rows this long are exact


def pooled(tree: Any) -> list[jax.Array]:
  """The leaves of gsm's default pool, in leaf order."""
  return [x for x, f in zip(jax.tree.leaves(tree), _pool.pool_flags(None, tree))
          if f]


def keys_of(grads: list[jax.Array], params: list[jax.Array]) -> list[jax.Array]:
  return [_selection.ordered_key(s) for s in
          optax_gsm.taylor_score(grads, params)]


def threshold_with_reuse(keys: list[jax.Array], k: jax.Array,
                         hint: jax.Array) -> tuple[jax.Array, ...]:
  """The k-th largest uint32 key, skipping the first radix pass on a hit.

  Returns ``(threshold, greater, equal, top_digit, hit)``.
  """
  shift = 32 - _DIGIT
  above = sum(jnp.sum((key >> shift) > hint, dtype=jnp.uint32)
              for key in keys)
  at = sum(jnp.sum((key >> shift) == hint, dtype=jnp.uint32) for key in keys)
  hit = (above < k) & (k <= above + at)

  def first_pass(_):
    hist = _selection._digit_histogram(keys, shift, jnp.uint32(0))  # pylint: disable=protected-access
    digit, above, at = _selection.pick_digit(hist, jnp.uint32(0), k)
    return digit.astype(jnp.uint32), above, at

  digit, above, _ = jax.lax.cond(hit, lambda _: (hint, above, at), first_pass,
                                 None)
  hist = _selection._digit_histogram(keys, 0, digit)  # pylint: disable=protected-access
  low, greater, equal = _selection.pick_digit(hist, above, k)
  return ((digit << _DIGIT) | low.astype(jnp.uint32), greater, equal, digit,
          hit)


def row_count(mask: jax.Array) -> jax.Array:
  flat = mask.ravel()
  if flat.size % _ROW:
    return jnp.sum(flat, dtype=jnp.uint32)
  rows = jnp.sum(flat.reshape(-1, _ROW).astype(jnp.float32), axis=1)
  return jnp.sum(rows.astype(jnp.uint32), dtype=jnp.uint32)


def masked_update(grads: list[jax.Array], params: list[jax.Array],
                  hint: jax.Array, k: int, *, reuse: bool = False,
                  cheap_counts: bool = False) -> tuple[Any, ...]:
  """gsm's mask stage on the pooled leaves: masked grads, counts, next hint."""
  keys = keys_of(grads, params)
  kk = jnp.uint32(k)
  if reuse:
    threshold, greater, equal, digit, hit = threshold_with_reuse(keys, kk,
                                                                 hint)
    masks = _selection.masks_at_threshold(keys, kk, threshold, greater, equal)
  else:
    masks = _selection._histogram_masks(keys, kk)  # pylint: disable=protected-access
    digit, hit = hint, jnp.bool_(False)
  out = [jnp.where(m, g, jnp.zeros((), g.dtype)) for m, g in zip(masks, grads)]
  counts = [row_count(m) if cheap_counts else jnp.sum(m, dtype=jnp.uint32)
            for m in masks]
  return out, counts, digit, hit


def check_same(reference: tuple[Any, ...], other: tuple[Any, ...]) -> bool:
  """Masked grads bit for bit, and the counts, equal the reference's (the
  random grads have no zero, so equal masked grads mean equal masks)."""
  same = all(bool(jnp.array_equal(a, b)) for a, b in
             zip(reference[0], other[0]))
  return same and all(int(a) == int(b) for a, b in
                      zip(reference[1], other[1]))


def time_update(shapes: common.Shapes, compression: float, repeats: int,
                ) -> list[dict[str, Any]]:
  """Median ms of each stage and variant at one size, interleaved."""
  params = common.random_tree(shapes, 0, 0.05)
  grads = common.random_tree(shapes, 1, 0.01)
  # The next step's gradient: close to this one, as in training.
  grads_next = jax.tree.map(lambda g, n: g + 0.1 * n, grads,
                            common.random_tree(shapes, 2, 0.01))
  pw, pg, pg_next = pooled(params), pooled(grads), pooled(grads_next)
  n = sum(x.size for x in pw)
  k = _pool.num_kept(n, compression, None)
  sgd = optax.sgd(0.01, momentum=0.99)
  gsm = optax_gsm.gsm(compression)
  sgd_state, gsm_state = sgd.init(params), gsm.init(params)
  sgd_update, gsm_update = jax.jit(sgd.update), jax.jit(gsm.update)
  variants = {
      "library": dict(),
      "top_digit_reuse": dict(reuse=True),
      "row_counts": dict(cheap_counts=True),
  }
  fns = {name: jax.jit(functools.partial(masked_update, k=k, **kw))
         for name, kw in variants.items()}
  keys_fn = jax.jit(keys_of)
  kth_fn = jax.jit(lambda g, w: _selection.kth_largest_key(
      keys_of(g, w), jnp.uint32(k)))
  threshold, greater, equal = kth_fn(pg_next, pw)
  stage_fn = jax.jit(lambda g, w, t, gr, eq: [
      jnp.where(m, x, 0.0) for m, x in zip(_selection.masks_at_threshold(
          keys_of(g, w), jnp.uint32(k), t, gr, eq), g)])
  # The hint a training step would carry (the previous step's top digit),
  # and one that hits for sure (this step's own), to time both paths.
  _, _, carried, _ = fns["top_digit_reuse"](pg, pw, jnp.uint32(0))
  _, _, hint, _ = fns["top_digit_reuse"](pg_next, pw, jnp.uint32(0))
  reference = fns["library"](pg_next, pw, hint)
  checks = {}
  for name, fn in fns.items():
    for label, h in (("hit", hint), ("carried", carried),
                     ("miss", jnp.uint32(0))):
      out = fn(pg_next, pw, h)
      checks[f"{name}/{label}"] = check_same(reference, out)
  assert bool(fns["top_digit_reuse"](pg_next, pw, hint)[3])
  hit = bool(fns["top_digit_reuse"](pg_next, pw, carried)[3])
  # Adversarial: equal |w| and a few grad levels, so that ties straddle the
  # cut and the tie-break runs (no zero grads: equal outputs = equal masks).
  pw_tied = [jnp.where(w < 0, -0.05, 0.05) for w in pw]
  pg_tied = [jnp.sign(g) * (1 + jnp.floor(jnp.abs(g) * 300)) / 300
             for g in pg_next]
  _, tied_greater, tied_equal = kth_fn(pg_tied, pw_tied)
  straddle = bool(k - int(tied_greater) < int(tied_equal))
  _, _, tied_hint, _ = fns["top_digit_reuse"](pg_tied, pw_tied, jnp.uint32(0))
  tied_reference = fns["library"](pg_tied, pw_tied, tied_hint)
  for name, fn in fns.items():
    for label, h in (("hit", tied_hint), ("miss", jnp.uint32(0))):
      checks[f"{name}/tied {label}"] = check_same(
          tied_reference, fn(pg_tied, pw_tied, h))
  calls = {
      "optax.sgd(momentum)": lambda: sgd_update(grads, sgd_state, params),
      "optax_gsm.gsm": lambda: gsm_update(grads_next, gsm_state, params),
      "stage: keys": lambda: keys_fn(pg_next, pw),
      "stage: k-th key (2 histogram passes)": lambda: kth_fn(pg_next, pw),
      "stage: keys + masks at the threshold + where": lambda: stage_fn(
          pg_next, pw, threshold, greater, equal),
      **{f"mask update: {name}" + (" (hit)" if name == "top_digit_reuse"
                                   else ""):
         (lambda fn=fn: fn(pg_next, pw, hint)) for name, fn in fns.items()},
      "mask update: top_digit_reuse (miss)":
          lambda: fns["top_digit_reuse"](pg_next, pw, jnp.uint32(0)),
  }
  common.log(f"{n:,} pooled entries, Q = {k:,}: masks identical "
             f"{all(checks.values())} (ties straddle the cut in the tied "
             f"input: {straddle}), the previous step's digit hits: {hit}; "
             f"timing {len(calls)} calls x {repeats}")
  times = common.time_samples(calls, repeats, warmup=1)
  base = statistics.median(times["optax.sgd(momentum)"])
  return [dict(pool=n, kept=k, what=name, ms=1e3 * statistics.median(ts),
               min_ms=1e3 * min(ts), vs_sgd=statistics.median(ts) / base,
               masks_identical=all(checks.values()), checks=checks,
               tied_input_straddles_cut=straddle, reuse_hit_next_step=hit)
          for name, ts in times.items()]


def digit_repeat_rate(steps: int, compression: float = 60.0,
                      ) -> dict[str, Any] | None:
  """How often the threshold's top digit repeats between training steps."""
  try:
    train, _ = datasets.load_idx_dataset(datasets.FASHION_MNIST_DIR)
  except FileNotFoundError as e:
    common.log(f"no Fashion-MNIST ({e}); skipping the repeat-rate run")
    return None
  x = datasets.normalize(train.images).reshape(len(train.images), -1)
  y = train.labels
  model = models.lenet_300_100()
  params = model.init(jax.random.key(0), x[:1])
  opt = optax_gsm.gsm_sgd(1e-2, compression, momentum=0.99, nesterov=True)
  state = opt.init(params)
  n = sum(w.size for w in pooled(params))
  k = jnp.uint32(_pool.num_kept(n, compression, None))

  @jax.jit
  def step(params, state, xb, yb):
    def loss_fn(p):
      logits = model.apply(p, xb)
      return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                             yb).mean()
    grads = jax.grad(loss_fn)(params)
    threshold, _, _ = _selection.kth_largest_key(
        keys_of(pooled(grads), pooled(params)), k)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, threshold

  rng = np.random.default_rng(0)
  keys = []
  for _ in range(steps):
    idx = rng.integers(0, len(y), 256)
    params, state, threshold = step(params, state, x[idx], y[idx])
    keys.append(int(threshold))
  keys = np.array(keys, np.uint32)
  digits = keys >> (32 - _DIGIT)
  repeats = digits[1:] == digits[:-1]
  late = repeats[len(repeats) // 2:]
  # A positive score's key is its float bits with the top bit set.
  scores = (keys & np.uint32(0x7FFFFFFF)).view(np.float32).astype(np.float64)
  change = np.abs(np.diff(scores)) / scores[:-1]
  return dict(model="LeNet-300-100", data="fashion-mnist",
              compression=compression, steps=steps, batch=256,
              repeat_rate=float(repeats.mean()),
              repeat_rate_second_half=float(late.mean()),
              median_relative_threshold_change=float(np.median(change)))


def table(rows: list[dict[str, Any]]) -> str:
  lines = ["| pool | what | median ms | x momentum SGD |", "|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['pool'] / 1e6:.1f}M | {r['what']} | {r['ms']:.1f} | "
                 f"{r['vs_sgd']:.2f} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="smoke run (1M pool)")
  p.add_argument("--repeats", type=int, default=9)
  p.add_argument("--compression", type=float, default=5.0)
  p.add_argument("--train-steps", type=int, default=2000,
                 help="LeNet-300-100 steps for the digit repeat rate (0: skip)")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  shapes = common.MODELS["resnet50_x0.17 (1M)" if args.quick
                         else "resnet50 (25M)"]()
  repeats = 2 if args.quick else args.repeats
  common.log(f"machine: {common.machine()}")
  rows = time_update(shapes, args.compression, repeats)
  steps = 50 if args.quick else args.train_steps
  rate = digit_repeat_rate(steps) if steps else None
  print(table(rows))
  if rate:
    print(f"top digit repeats on {rate['repeat_rate']:.1%} of steps "
          f"({rate['repeat_rate_second_half']:.1%} in the second half; "
          "median step-to-step change of the threshold score "
          f"{rate['median_relative_threshold_change']:.1%}), "
          f"{rate['model']} at 60x, {rate['steps']} steps")
  out = args.out or os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results",
      "update_variants_quick.json" if args.quick else "update_variants.json")
  command = " ".join(["python benchmarks/update_variants.py",
                      *(sys.argv[1:] if argv is None else argv)])
  common.write_results(out, rows, command=command, repeat_rate=rate)
  return dict(rows=rows, repeat_rate=rate)


if __name__ == "__main__":
  main()
