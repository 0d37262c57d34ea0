"""Brute-force NumPy references that the tests hold the library to.

Nothing here imports optax_gsm: the references are independent of the code
under test.
"""

from __future__ import annotations

import fractions
import math

import numpy as np


def num_kept(pool_size: int, compression=None, density=None) -> int:
  """floor(N / C) or floor(N * d), exactly; off from an integer only by the
  binary rounding of the ratio (relative 2**-50) counts as that integer."""
  ratio = (fractions.Fraction(density) if density is not None
           else 1 / fractions.Fraction(compression))
  exact = pool_size * ratio  # exact product of the binary values
  nearest = round(exact)
  if abs(exact - nearest) <= fractions.Fraction(1, 2**50) * max(1, exact):
    return nearest
  return math.floor(exact)


def top_k_flat(scores: list[np.ndarray], k: int) -> list[np.ndarray]:
  """Masks of the k largest scores over all arrays taken together.

  Order: larger score first; NaN after every number; -0.0 equals 0.0; ties
  to the lower global index (arrays in order, then row-major).
  """
  flat = np.concatenate([np.asarray(s, np.float64).ravel() for s in scores])
  is_nan = np.isnan(flat)
  value = np.where(is_nan, 0.0, flat) + 0.0  # + 0.0 turns -0.0 into 0.0
  index = np.arange(flat.size)
  order = np.lexsort((index, -value, is_nan))  # last key sorts first
  keep = np.zeros(flat.size, bool)
  keep[order[:k]] = True
  masks, start = [], 0
  for s in scores:
    masks.append(keep[start:start + np.size(s)].reshape(np.shape(s)))
    start += np.size(s)
  return masks


def taylor(grad: np.ndarray, param: np.ndarray) -> np.ndarray:
  """|g * w| in float32 (float64 for float64 inputs), as the paper scores."""
  dtype = np.float64 if np.asarray(param).dtype == np.float64 else np.float32
  with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as in XLA
    return np.abs(np.asarray(grad).astype(dtype) *
                  np.asarray(param).astype(dtype))


def gsm_sgd_steps(params, grads_seq, *, lr, momentum, weight_decay, kept,
                  pool):
  """Runs the paper's GSM update by hand on lists of arrays.

  z <- momentum * z + weight_decay * w + B * g;  w <- w - lr * z, where B
  selects the `kept` largest |g * w| over the arrays flagged in `pool`.
  """
  params = [np.array(p, np.float64) for p in params]
  trace = [np.zeros_like(p) for p in params]
  for grads in grads_seq:
    scores = [taylor(g, p.astype(np.float32))
              for g, p, f in zip(grads, params, pool) if f]
    masks = iter(top_k_flat(scores, kept))
    for i, (g, f) in enumerate(zip(grads, pool)):
      g = np.asarray(g, np.float64)
      if f:
        g = np.where(next(masks), g, 0.0)
      trace[i] = momentum * trace[i] + weight_decay * params[i] + g
      params[i] = params[i] - lr * trace[i]
  return params, trace


def lossless_gsm_steps(params, grads_seq, *, lr, momentum, weight_decay, kept,
                       pool, score_decay=0.0, prune_step=None, nesterov=False):
  """GSM with our two extensions, by hand on lists of arrays.

  s <- 0 where w == 0, else rho * s + (1 - rho) * |g * w|; B selects the
  `kept` largest s over the pool; z <- momentum * z + weight_decay * w + B * g;
  u = -lr * z (Nesterov: -lr * (B * g + weight_decay * w + momentum * z)).
  At step `prune_step` the pool keeps the `kept` largest |w + u| and every
  other pooled entry gets u = -w, then and at every later step.
  Returns params, the masks in force at the end, and the active masks.
  """
  params = [np.array(p, np.float32) for p in params]
  trace = [np.zeros_like(p) for p in params]
  avg = [np.zeros_like(p) for p, f in zip(params, pool) if f]
  keep = None
  actives = []
  for step, grads in enumerate(grads_seq):
    pooled = [p for p, f in zip(params, pool) if f]
    t = [taylor(g, p) for g, p, f in zip(grads, params, pool) if f]
    avg = [np.where(p == 0, np.float32(0), np.float32(score_decay) * a +
                    np.float32(1 - score_decay) * s)
           for a, s, p in zip(avg, t, pooled)]
    active = top_k_flat(avg, kept)
    actives.append(active)
    masks = iter(active)
    updates = []
    for i, (g, f) in enumerate(zip(grads, pool)):
      g = np.asarray(g, np.float32)
      if f:
        g = np.where(next(masks), g, np.float32(0))
      d = g + np.float32(weight_decay) * params[i]
      trace[i] = np.float32(momentum) * trace[i] + d
      direction = d + np.float32(momentum) * trace[i] if nesterov else trace[i]
      updates.append(-np.float32(lr) * direction)
    if prune_step is not None and step == prune_step:
      keep = top_k_flat([np.abs(p + u) for p, u, f in
                         zip(params, updates, pool) if f], kept)
    if keep is not None:
      it = iter(keep)
      updates = [np.where(next(it), u, -p) if f else u
                 for p, u, f in zip(params, updates, pool)]
    params = [p + u for p, u in zip(params, updates)]
  return params, keep, actives
