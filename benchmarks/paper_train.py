"""The training loop of ``benchmarks/paper.py``: jitted epochs, a progress bar.

An epoch is one permutation of the training split cut into batches; the
data stays on the device. Dense nets run an epoch as one ``lax.scan``; conv
nets run a Python loop of jitted steps (``lax.scan`` over convolutions is far
slower on XLA:CPU).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

try:  # optional extra: pip install -e ".[examples]"
  from tqdm import tqdm
except ImportError:  # pragma: no cover
  tqdm = None


class Progress:
  """A tqdm bar over steps when tqdm is installed, else a line at the end."""

  def __init__(self, total: int, label: str, enabled: bool = True):
    self.label, self.total, self.done = label, total, 0
    self.start = time.perf_counter()
    self.bar = (tqdm(total=total, desc=label, unit="step", leave=False,
                     mininterval=2.0, dynamic_ncols=True)
                if tqdm is not None and enabled else None)

  def update(self, n: int, **postfix: Any) -> None:
    self.done += n
    if self.bar is not None:
      self.bar.update(n)
      if postfix:
        self.bar.set_postfix(postfix, refresh=False)

  def close(self, message: str) -> None:
    if self.bar is not None:
      self.bar.close()
    print(f"    {self.label}: {message} "
          f"({time.perf_counter() - self.start:.1f}s)", flush=True)


class Trainer:
  """Jitted training and evaluation of one model on one data dict.

  Compiled functions are cached per key, so masks and states are arguments,
  not constants. ``compile_s`` adds up compilation, which the wall times
  that ``train`` returns leave out.
  """

  def __init__(self, model: Any, data: dict[str, Any], batch_size: int,
               scan_epochs: bool, progress: bool = True):
    self.model, self.data, self.batch_size = model, data, batch_size
    self.scan_epochs, self.progress = scan_epochs, progress
    self._compiled: dict[Any, Any] = {}
    self.compile_s = 0.0

    def loss_fn(params, x, y):
      logits = model.apply(params, x)
      return optax.losses.softmax_cross_entropy_with_integer_labels(
          logits, y).mean()

    self.loss_fn = loss_fn
    self._correct = jax.jit(lambda p, x, y: jnp.sum(
        jnp.argmax(model.apply(p, x), -1) == y))

  @property
  def steps_per_epoch(self) -> int:
    return max(1, len(self.data["y_train"]) // self.batch_size)

  def call(self, key: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``jax.jit(fn)(*args)``, compiled once per ``key`` (time not counted)."""
    if key not in self._compiled:
      t0 = time.perf_counter()
      self._compiled[key] = jax.jit(fn).lower(*args).compile()
      self.compile_s += time.perf_counter() - t0
    return self._compiled[key](*args)

  def _step(self, opt: optax.GradientTransformation):
    loss_fn = self.loss_fn

    def step(params, opt_state, x_all, y_all, idx):
      loss, grads = jax.value_and_grad(loss_fn)(params, x_all[idx], y_all[idx])
      updates, opt_state = opt.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    return step

  def _chunk(self, opt: optax.GradientTransformation):
    step = self._step(opt)

    def chunk(params, opt_state, x_all, y_all, idx):
      def body(carry, i):
        p, s, loss = step(*carry, x_all, y_all, i)
        return (p, s), loss
      (params, opt_state), losses = jax.lax.scan(body, (params, opt_state),
                                                 idx)
      return params, opt_state, losses[-1]

    return chunk

  def batches(self, steps: int, rng: np.random.Generator) -> np.ndarray:
    """``steps`` batches of indices: whole epochs of permutations."""
    n, bs, spe = len(self.data["y_train"]), self.batch_size, \
        self.steps_per_epoch
    epochs = -(-steps // spe)
    idx = np.concatenate([rng.permutation(n)[:spe * bs].reshape(spe, bs)
                          for _ in range(epochs)])
    return idx[:steps].astype(np.int32)

  def train(self, key: Any, opt: optax.GradientTransformation, params: Any,
            steps: int, rng: np.random.Generator, label: str,
            callback: Callable[[int, Any, Any], None] | None = None,
            ) -> tuple[Any, Any, float]:
    """``steps`` updates of ``opt`` from ``params``; returns params, state and
    wall seconds without compilation. ``key`` names ``opt`` for the cache.

    ``callback(step, params, opt_state)``, if given, runs after every epoch.
    """
    x_all, y_all = self.data["x_train"], self.data["y_train"]
    idx = self.batches(steps, rng)
    spe = self.steps_per_epoch
    state = opt.init(params)
    progress = Progress(steps, label, self.progress)
    compile_before = self.compile_s
    done = 0
    loss = jnp.nan
    while done < steps:
      n = min(spe, steps - done)
      if self.scan_epochs:
        params, state, loss = self.call(("chunk", key, n), self._chunk(opt),
                                        params, state, x_all, y_all,
                                        idx[done:done + n])
      else:
        for i in range(done, done + n):
          params, state, loss = self.call(("step", key), self._step(opt),
                                          params, state, x_all, y_all, idx[i])
      done += n
      if callback is not None:
        callback(done, params, state)
      progress.update(n, loss=f"{float(loss):.4f}")
    jax.block_until_ready(params)
    wall = time.perf_counter() - progress.start - (self.compile_s -
                                                   compile_before)
    progress.close(f"{steps} steps, last loss {float(loss):.4f}")
    return params, state, wall

  def accuracy(self, params: Any, split: str = "test") -> float:
    x, y = self.data[f"x_{split}"], self.data[f"y_{split}"]
    correct = 0
    for i in range(0, len(y), 1000):
      correct += int(self._correct(params, x[i:i + 1000], y[i:i + 1000]))
    return correct / len(y)
