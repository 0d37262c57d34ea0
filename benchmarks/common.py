"""Shared helpers of the benchmarks: model-shaped pytrees and timing."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Shapes = dict[str, Any]  # nested dict whose leaves are shape tuples


def resnet50_shapes(width: float = 1.0, num_classes: int = 1000) -> Shapes:
  """Leaf shapes of ResNet-50 (Flax layout: HWIO kernels, BN scale and bias).

  ``width`` scales every channel count, so smaller pools keep ResNet-50's mix
  of leaf sizes (25.6M parameters at width 1).
  """
  def ch(c):
    return max(1, int(round(c * width)))

  shapes: Shapes = {"conv_init": {"kernel": (7, 7, 3, ch(64))},
                    "bn_init": {"scale": (ch(64),), "bias": (ch(64),)}}
  cin = ch(64)
  for stage, (blocks, mid) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
    m, out = ch(mid), ch(4 * mid)
    for block in range(blocks):
      b: Shapes = {}
      for i, (kh, ci, co) in enumerate(((1, cin, m), (3, m, m), (1, m, out))):
        b[f"conv{i}"] = {"kernel": (kh, kh, ci, co)}
        b[f"bn{i}"] = {"scale": (co,), "bias": (co,)}
      if block == 0:
        b["proj_conv"] = {"kernel": (1, 1, cin, out)}
        b["proj_bn"] = {"scale": (out,), "bias": (out,)}
      shapes[f"stage{stage}_block{block}"] = b
      cin = out
  shapes["head"] = {"kernel": (cin, num_classes), "bias": (num_classes,)}
  return shapes


def transformer_shapes(d_model: int = 768, layers: int = 12,
                       vocab: int = 32_000, seq: int = 1024) -> Shapes:
  """Leaf shapes of a GPT-style decoder (110M parameters by default)."""
  shapes: Shapes = {"embed": {"embedding": (vocab, d_model)},
                    "pos_embed": {"embedding": (seq, d_model)}}
  for layer in range(layers):
    shapes[f"layer{layer}"] = {
        "ln1": {"scale": (d_model,), "bias": (d_model,)},
        "qkv": {"kernel": (d_model, 3 * d_model), "bias": (3 * d_model,)},
        "out": {"kernel": (d_model, d_model), "bias": (d_model,)},
        "ln2": {"scale": (d_model,), "bias": (d_model,)},
        "mlp_in": {"kernel": (d_model, 4 * d_model), "bias": (4 * d_model,)},
        "mlp_out": {"kernel": (4 * d_model, d_model), "bias": (d_model,)},
    }
  shapes["ln_f"] = {"scale": (d_model,), "bias": (d_model,)}
  return shapes


MODELS: dict[str, Callable[[], Shapes]] = {
    "resnet50_x0.17 (1M)": lambda: resnet50_shapes(0.17),
    "resnet50_x0.62 (10M)": lambda: resnet50_shapes(0.62),
    "resnet50 (25M)": resnet50_shapes,
    "transformer (110M)": transformer_shapes,
}


def num_params(shapes: Shapes) -> int:
  return sum(int(np.prod(s)) for s in jax.tree.leaves(
      shapes, is_leaf=lambda x: isinstance(x, tuple)))


def random_tree(shapes: Shapes, seed: int, scale: float = 1.0) -> Any:
  """Float32 normal arrays shaped by ``shapes``, made on the device."""
  leaves, treedef = jax.tree.flatten(
      shapes, is_leaf=lambda x: isinstance(x, tuple))
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  arrays = [scale * jax.random.normal(key, shape, jnp.float32)
            for key, shape in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, arrays)


def time_samples(fns: dict[str, Callable[[], Any]], repeats: int,
                 warmup: int = 1) -> dict[str, list[float]]:
  """Seconds of every call of each function, calls interleaved round-robin.

  Interleaving makes the ratios between functions robust to the load of a
  shared machine drifting during the run. JAX results are waited for.
  """
  for _ in range(warmup):
    for fn in fns.values():
      jax.block_until_ready(fn())
  times: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return times


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int,
                     warmup: int = 1) -> dict[str, float]:
  """Median seconds per call of each function (:func:`time_samples`)."""
  return {name: statistics.median(ts)
          for name, ts in time_samples(fns, repeats, warmup).items()}


def temp_bytes(compiled: Any) -> int | None:
  """Scratch (temp) bytes of a compiled executable, if XLA reports them."""
  try:
    return int(compiled.memory_analysis().temp_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None


def peak_rss_bytes() -> int:
  """Peak resident set size of this process so far (Linux: KiB units)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def machine() -> dict[str, Any]:
  return {
      "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime(
          "%Y-%m-%d %H:%M"),
      "cpu": platform.processor() or platform.machine(),
      "cpu_count": os.cpu_count(),
      "load_avg_1m": os.getloadavg()[0],
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
  }


def log(msg: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_results(path: str, rows: list[dict[str, Any]], **meta: Any) -> None:
  """Writes ``rows`` with the machine's description and ``meta`` as JSON."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump({"machine": machine(), **meta, "rows": rows}, f, indent=1)
  log(f"wrote {path}")
