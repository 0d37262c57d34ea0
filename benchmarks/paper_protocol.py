"""The protocols of ``benchmarks/paper.py``: budgets, schedules and data.

Three protocols share one code path:

* ``paper``: the official lottery-ticket scripts' schedules (the paper's code),
  counted in epochs of ``batch_size`` examples: base 200 epochs, lr 3e-2 x0.1
  at 40/80/120/160, momentum 0.9; GSM 280 epochs, lr 1e-2 x0.1 at
  160/200/240, beta 0.99 Nesterov; weight decay 5e-4 on the kernels; batch
  256; 5-epoch linear warm-up from 0. ``--scale 0.5`` halves every epoch count.
* ``short``: the budgets of the first evidence (6,000 + 6,000 steps for
  LeNet-300-100 at batch 64), with a weight decay raised so that passive
  weights can decay in so few steps.
* ``quick``: a CI smoke run on a data subset.

Every protocol carves a validation split from the training set; choices are
made on it, and the test split is reported.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

import optax_gsm
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples.common import datasets  # pylint: disable=wrong-import-position
from examples.common import models

MODELS = {
    "lenet300": ("LeNet-300-100", models.lenet_300_100),
    "lenet5": ("LeNet-5", models.LeNet5),
}
METHODS = ("gsm", "gsm_lossless", "magnitude_ft", "gmp", "gmp_layer",
           "weightmom", "snip", "ticket_gsm", "ticket_magnitude")
BASELINES = ("magnitude_ft", "gmp", "gmp_layer", "weightmom", "snip")
PROTOCOLS = ("paper", "short", "quick")
DEFAULT_RATIOS = {"lenet300": (30.0, 60.0, 120.0), "lenet5": (125.0, 300.0)}
# WeightMom's own settings, fixed before any result: a check every K/80 steps
# and a window of 15 checks, so that the ramp's end plus one window (when the
# exact final count is enforced) falls inside K.
WEIGHTMOM = dict(checks_per_k=80, window=15, min_below=10)


@dataclasses.dataclass
class Config:
  """A protocol. Steps count optimizer updates of ``batch_size`` examples."""
  protocol: str = "paper"
  models: tuple[str, ...] = ("lenet300", "lenet5")
  methods: tuple[str, ...] = METHODS
  ratios: dict[str, tuple[float, ...]] = dataclasses.field(
      default_factory=lambda: dict(DEFAULT_RATIOS))
  seeds: tuple[int, ...] = (0, 1, 2)
  batch_size: int = 256
  # Budgets in epochs (paper) or in steps (short, quick); see steps().
  base_epochs: float = 200.0
  prune_epochs: float = 280.0
  base_steps: dict[str, int] = dataclasses.field(default_factory=dict)
  prune_steps: dict[str, int] = dataclasses.field(default_factory=dict)
  scale: float = 1.0
  # Base training, fine-tuning, GMP, WeightMom, SNIP and ticket retraining.
  sgd_lr: float = 3e-2
  sgd_momentum: float = 0.9
  sgd_weight_decay: float = 5e-4
  sgd_drops: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)  # x0.1 at these
  # GSM.
  gsm_lr: float = 1e-2
  gsm_momentum: float = 0.99
  gsm_nesterov: bool = True
  gsm_weight_decay: float | None = 5e-4  # None: from gsm_decay_exponent
  gsm_decay_exponent: float = 6.0
  gsm_drops: tuple[float, ...] = (160 / 280, 200 / 280, 240 / 280)
  warmup_epochs: float = 5.0
  # The lossless option (ours), chosen on the validation split
  # (docs/lossless.md): optax_gsm.gsm_sgd's prune_step at the first lr decay
  # (a fraction of the GSM phase), and its score_decay.
  lossless_score_decay: float | None = None
  lossless_prune_at_first_decay: bool = True
  # Overrides the first decay: the prune at this fraction of the GSM phase,
  # in (0, 1) (at 1 the prune step would never be reached).
  lossless_prune_at: float | None = None
  snip_batch: int = 256
  validation: int = 5000
  train_subset: int | None = None
  test_subset: int | None = None


def make(protocol: str, scale: float = 1.0) -> Config:
  """The named protocol, with every epoch count times ``scale``."""
  if protocol == "paper":
    cfg = Config(base_epochs=200 * scale, prune_epochs=280 * scale,
                 warmup_epochs=5 * scale, scale=scale)
  elif protocol == "short":
    cfg = Config(
        protocol="short", batch_size=64, base_epochs=0, prune_epochs=0,
        base_steps={"lenet300": 6000, "lenet5": 800},
        prune_steps={"lenet300": 6000, "lenet5": 1200},
        gsm_nesterov=False, gsm_weight_decay=None, gsm_drops=(0.8,),
        warmup_epochs=0, scale=scale)
    cfg.base_steps = {m: max(1, round(s * scale))
                      for m, s in cfg.base_steps.items()}
    cfg.prune_steps = {m: max(1, round(s * scale))
                       for m, s in cfg.prune_steps.items()}
  elif protocol == "quick":
    cfg = Config(
        protocol="quick", ratios={"lenet300": (60.0,), "lenet5": (300.0,)},
        seeds=(0,), batch_size=32, base_epochs=0, prune_epochs=0,
        base_steps={"lenet300": 60, "lenet5": 30},
        prune_steps={"lenet300": 60, "lenet5": 30}, gsm_nesterov=False,
        gsm_weight_decay=None, gsm_drops=(0.8,), warmup_epochs=0,
        train_subset=2048, test_subset=512, validation=256, snip_batch=64)
  else:
    raise ValueError(f"unknown protocol {protocol!r}; expected one of "
                     f"{list(PROTOCOLS)}.")
  return cfg


def steps_per_epoch(cfg: Config, train_size: int) -> int:
  return max(1, train_size // cfg.batch_size)


def resolve_steps(cfg: Config, train_size: int) -> None:
  """Fills ``base_steps`` and ``prune_steps`` from epochs (paper protocol)."""
  spe = steps_per_epoch(cfg, train_size)
  for m in MODELS:
    if cfg.base_epochs:
      cfg.base_steps[m] = max(1, round(cfg.base_epochs * spe))
    if cfg.prune_epochs:
      cfg.prune_steps[m] = max(1, round(cfg.prune_epochs * spe))


def _warmup_steps(cfg: Config, steps: int, train_size: int) -> int:
  if cfg.warmup_epochs:
    return max(1, round(cfg.warmup_epochs * steps_per_epoch(cfg, train_size)))
  return max(1, steps // 20)


def step_schedule(lr: float, steps: int, warmup: int,
                  drops: tuple[float, ...]) -> optax.Schedule:
  """Linear warm-up from 0 over ``warmup`` steps, then x0.1 at each fraction
  of ``steps`` in ``drops`` (the official ``WarmupMultiStepLR``)."""
  bounds = {max(1, round(f * steps) - warmup): 0.1 for f in drops}
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup),
       optax.piecewise_constant_schedule(lr, bounds)], [warmup])


def sgd_schedule(cfg: Config, steps: int, train_size: int) -> optax.Schedule:
  """Base training, fine-tuning and retraining: one recipe for every method."""
  warmup = _warmup_steps(cfg, steps, train_size)
  if cfg.protocol == "paper":
    return step_schedule(cfg.sgd_lr, steps, warmup, cfg.sgd_drops)
  return optax.warmup_cosine_decay_schedule(0.0, cfg.sgd_lr, warmup, steps,
                                            cfg.sgd_lr * 0.01)


def sgd(cfg: Config, steps: int, train_size: int,
        weight_decay_mask: Any = None) -> optax.GradientTransformation:
  return optax.chain(
      optax.add_decayed_weights(cfg.sgd_weight_decay, mask=weight_decay_mask),
      optax.sgd(sgd_schedule(cfg, steps, train_size),
                momentum=cfg.sgd_momentum))


def gsm_schedule(cfg: Config, steps: int, train_size: int) -> optax.Schedule:
  return step_schedule(cfg.gsm_lr, steps, _warmup_steps(cfg, steps, train_size),
                       cfg.gsm_drops)


def gsm_weight_decay(cfg: Config, steps: int, train_size: int) -> float:
  """eta: fixed (paper), or sized by ``optax_gsm.weight_decay_for`` so that a
  passive weight decays by exp(-gsm_decay_exponent) over the run (short)."""
  if cfg.gsm_weight_decay is not None:
    return cfg.gsm_weight_decay
  return optax_gsm.weight_decay_for(
      gsm_schedule(cfg, steps, train_size), steps,
      momentum=cfg.gsm_momentum, exponent=cfg.gsm_decay_exponent)


def lossless_prune_step(cfg: Config, steps: int) -> int | None:
  """``gsm_sgd``'s ``prune_step`` for ``gsm_lossless``: the first lr decay,
  or ``cfg.lossless_prune_at`` (a fraction of the GSM phase) when set."""
  if cfg.lossless_prune_at is not None:
    return max(1, round(cfg.lossless_prune_at * steps))
  if not cfg.lossless_prune_at_first_decay:
    return None
  return round(min(cfg.gsm_drops) * steps)


def load_data(cfg: Config, data_dir: str) -> dict[str, Any]:
  """Train / validation / test arrays; digits in ``quick`` if IDX is absent.

  The validation split is the last ``cfg.validation`` images of a fixed
  permutation of the training set; it is never trained on.
  """
  try:
    train, test = datasets.load_idx_dataset(data_dir)
    name = os.path.basename(os.path.normpath(data_dir))
  except FileNotFoundError as e:
    if cfg.protocol != "quick":
      raise
    print(f"[data] {e}; the quick protocol falls back to scikit-learn digits",
          flush=True)
    train, test, name = _digits()
  rng = np.random.default_rng(1234)
  if cfg.train_subset and cfg.train_subset < len(train.labels):
    keep = rng.permutation(len(train.labels))[:cfg.train_subset]
    train = datasets.Split(train.images[keep], train.labels[keep])
  if cfg.test_subset and cfg.test_subset < len(test.labels):
    keep = rng.permutation(len(test.labels))[:cfg.test_subset]
    test = datasets.Split(test.images[keep], test.labels[keep])
  order = np.random.default_rng(4321).permutation(len(train.labels))
  fit, val = order[:-cfg.validation], order[-cfg.validation:]
  mean = float((train.images[fit] / 255.0).mean())
  std = float((train.images[fit] / 255.0).std())
  norm = lambda a: jnp.asarray(datasets.normalize(a, mean, std)[..., None])
  data = dict(name=name, x_train=norm(train.images[fit]),
              y_train=jnp.asarray(train.labels[fit]),
              x_val=norm(train.images[val]), y_val=jnp.asarray(
                  train.labels[val]),
              x_test=norm(test.images), y_test=jnp.asarray(test.labels))
  print(f"[data] {name}: {len(fit)} train, {len(val)} validation, "
        f"{len(test.labels)} test, mean {mean:.4f} std {std:.4f}", flush=True)
  return data


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


def target_kept(pool: int, ratio: float) -> int:
  return math.floor(pool / ratio)
