"""The training loop of ``benchmarks/deep.py``: NNX nets trained functionally.

The model is split once into its graph, its ``nnx.Param`` and its
``nnx.BatchStat``; the optimizer sees the params as a plain nested dict (the
layout ``nnx.to_pure_dict`` gives), so every pool, mask and checkpoint is a
plain pytree. A run is a list of chunks of at most one epoch; after each
chunk its params, statistics, optimizer state and step are pickled, so a
stopped run resumes where it stopped, with the same batches.
"""

from __future__ import annotations

import os
import pickle
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

try:  # optional extra: pip install -e ".[examples]"
  from tqdm import tqdm
except ImportError:  # pragma: no cover
  tqdm = None


class Net:
  """One NNX model as pure functions of ``(params, stats)`` dicts."""

  def __init__(self, model: nnx.Module):
    self.graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    self._params_tmpl, self._stats_tmpl = params, stats
    self.params = nnx.to_pure_dict(params)
    self.stats = nnx.to_pure_dict(stats)

  def module(self, params: Any, stats: Any) -> nnx.Module:
    p, s = nnx.clone(self._params_tmpl), nnx.clone(self._stats_tmpl)
    nnx.replace_by_pure_dict(p, params)
    nnx.replace_by_pure_dict(s, stats)
    return nnx.merge(self.graphdef, p, s)

  def stats_of(self, model: nnx.Module) -> Any:
    return nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))

  def apply(self, params: Any, stats: Any, x: jax.Array, train: bool
            ) -> tuple[jax.Array, Any]:
    model = self.module(params, stats)
    model.train() if train else model.eval()
    logits = model(x)
    return logits, self.stats_of(model)


def make_step(net: Net, opt: optax.GradientTransformation) -> Callable:
  def loss_fn(params, stats, x, y):
    logits, stats = net.apply(params, stats, x, train=True)
    loss = optax.losses.softmax_cross_entropy_with_integer_labels(
        logits, y).mean()
    return loss, stats

  def step(params, stats, opt_state, x_all, y_all, idx):
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, stats, x_all[idx], y_all[idx])
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1, 2))


def make_eval(net: Net) -> Callable:
  return jax.jit(lambda p, s, x, y: jnp.sum(
      jnp.argmax(net.apply(p, s, x, train=False)[0], -1) == y))


def accuracy(eval_fn: Callable, params: Any, stats: Any, x: jax.Array,
             y: jax.Array, batch: int = 1000) -> float:
  correct = 0
  for i in range(0, len(y), batch):
    correct += int(eval_fn(params, stats, x[i:i + batch], y[i:i + batch]))
  return correct / len(y)


def epoch_batches(n: int, batch: int, seed: tuple[int, ...]) -> np.ndarray:
  """One permutation of ``range(n)`` cut into full batches, from ``seed``."""
  steps = n // batch
  perm = np.random.default_rng(seed).permutation(n)[:steps * batch]
  return perm.reshape(steps, batch).astype(np.int32)


def _save(path: str, obj: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    pickle.dump(jax.device_get(obj), f)
  os.replace(tmp, path)


def train(net: Net, opt: optax.GradientTransformation, params: Any,
          stats: Any, steps: int, data: dict[str, Any], batch: int,
          seed: tuple[int, ...], label: str, checkpoint: str | None,
          progress: bool = True,
          on_chunk: Callable[[int, Any, Any, Any], dict] | None = None,
          ) -> dict[str, Any]:
  """``steps`` updates of ``opt`` from ``(params, stats)``, resumable.

  Returns a dict with the final ``params``, ``stats``, ``opt_state``, the
  ``history`` (one entry per chunk from ``on_chunk(step, params, stats,
  opt_state)``) and ``train_s`` (wall seconds of the steps, summed over
  sessions, compilation included).
  """
  x_all, y_all = data["x_train"], data["y_train"]
  spe = len(y_all) // batch
  params, stats = jax.tree.map(jnp.copy, (params, stats))  # steps donate
  state = {"params": params, "stats": stats, "opt_state": opt.init(params),
           "step": 0, "history": [], "train_s": 0.0}
  if checkpoint and os.path.exists(checkpoint):
    with open(checkpoint, "rb") as f:
      saved = pickle.load(f)
    state = jax.tree.map(jnp.asarray, {k: saved[k] for k in (
        "params", "stats", "opt_state")})
    state.update(step=saved["step"], history=saved["history"],
                 train_s=saved["train_s"])
    print(f"    {label}: resumed at step {state['step']}/{steps}", flush=True)
  step_fn = make_step(net, opt)
  bar = (tqdm(total=steps, initial=state["step"], desc=label, unit="step",
              mininterval=5.0, dynamic_ncols=True, leave=False)
         if tqdm is not None and progress else None)
  p, s, o = state["params"], state["stats"], state["opt_state"]
  loss = jnp.nan
  while state["step"] < steps:
    epoch, start = divmod(state["step"], spe)
    idx = epoch_batches(len(y_all), batch, (*seed, epoch))
    n = min(spe - start, steps - state["step"])
    t0 = time.perf_counter()
    for i in range(start, start + n):
      p, s, o, loss = step_fn(p, s, o, x_all, y_all, idx[i])
      if bar is not None:
        bar.update(1)
        if i % 20 == 0:
          bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
    jax.block_until_ready(p)
    state["train_s"] += time.perf_counter() - t0
    state["step"] += n
    entry = {"step": state["step"], "loss": float(loss)}
    if on_chunk is not None:
      entry.update(on_chunk(state["step"], p, s, o))
    state["history"].append(entry)
    state.update(params=p, stats=s, opt_state=o)
    if checkpoint:
      _save(checkpoint, state)
    print(f"    {label}: step {state['step']}/{steps} "
          + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in entry.items() if k != "step"), flush=True)
  if bar is not None:
    bar.close()
  return state
