"""Sparse export of hard-pruned models: bytes, exactness and CPU latency.

For LeNet-300-100 and LeNet-5 (``examples.common.models``, weights at
initialization, global magnitude prune at several compressions):

* bytes of a dense ``.npz`` of all params, of ``save_sparse`` (values plus
  flat indices in the smallest unsigned dtype), the same deflated
  (``compress=True``), and of the in-memory BCOO arrays (values plus int32
  coordinates);
* the logits of the model reloaded from the sparse file against the pruned
  dense model (must be equal);
* for LeNet-300-100 only (BCOO convolutions are not supported by JAX), the
  median latency of the jitted dense forward pass against
  ``sparse_mlp_apply`` on BCOO kernels, batch 1 and 256, calls interleaved.

Run ``python benchmarks/export.py`` (``--quick`` for fewer repeats); writes
``benchmarks/results/export.json``.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  pylint: disable=wrong-import-position

import optax_gsm  # noqa: E402  pylint: disable=wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples.common import models  # noqa: E402  pylint: disable=wrong-import-position

MODELS = {
    "lenet_300_100": (models.lenet_300_100(), (784,)),
    "lenet5": (models.LeNet5(), (28, 28, 1)),
}


def dense_npz_bytes(params) -> int:
  buf = io.BytesIO()
  np.savez(buf, *[np.asarray(x) for x in jax.tree.leaves(params)])
  return len(buf.getvalue())


def bcoo_bytes(tree) -> int:
  total = 0
  for x in jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, "todense")):
    total += (x.data.nbytes + x.indices.nbytes) if hasattr(
        x, "todense") else x.nbytes
  return total


def run(compressions, repeats):
  rows = []
  for name, (model, in_shape) in MODELS.items():
    x1 = jax.random.normal(jax.random.key(0), (1, *in_shape))
    x256 = jax.random.normal(jax.random.key(0), (256, *in_shape))
    params = model.init(jax.random.key(1), x1)
    dense_apply = jax.jit(model.apply)
    for c in compressions:
      pruned = jax.jit(lambda p, c=c: optax_gsm.prune(p, compression=c)[0])(
          params)
      buf = io.BytesIO()
      sparse_bytes = optax_gsm.save_sparse(buf, pruned)
      buf.seek(0)
      loaded = optax_gsm.load_sparse(buf)
      reload_diff = float(jnp.max(jnp.abs(dense_apply(loaded, x256)
                                          - dense_apply(pruned, x256))))
      bcoo = optax_gsm.to_bcoo(pruned)
      row = {
          "model": name, "compression": c,
          "kept": optax_gsm.sparsity_report(pruned).kept,
          "bytes_dense_npz": dense_npz_bytes(pruned),
          "bytes_sparse_npz": sparse_bytes,
          "bytes_sparse_npz_deflated": optax_gsm.save_sparse(
              io.BytesIO(), pruned, compress=True),
          "bytes_bcoo_in_memory": bcoo_bytes(bcoo),
          "bytes_dense_in_memory": sum(int(x.nbytes)
                                       for x in jax.tree.leaves(pruned)),
          "max_abs_logit_diff_reloaded": reload_diff,
      }
      if isinstance(model, models.MLP):
        sparse_apply = jax.jit(
            lambda p, x, m=model: models.sparse_mlp_apply(m, p, x))
        row["max_abs_logit_diff_bcoo"] = float(jnp.max(jnp.abs(
            sparse_apply(bcoo, x256) - dense_apply(pruned, x256))))
        times = common.time_interleaved({
            "dense_b1": lambda: dense_apply(pruned, x1),
            "bcoo_b1": lambda: sparse_apply(bcoo, x1),
            "dense_b256": lambda: dense_apply(pruned, x256),
            "bcoo_b256": lambda: sparse_apply(bcoo, x256),
        }, repeats=repeats, warmup=2)
        row.update({f"ms_{k}": 1e3 * v for k, v in times.items()})
      rows.append(row)
      common.log(
          f"{name} C={c}: npz {row['bytes_dense_npz']:,} -> "
          f"{row['bytes_sparse_npz']:,} B (deflated "
          f"{row['bytes_sparse_npz_deflated']:,}), reload diff "
          f"{reload_diff:.1e}" + (
              f", b256 dense {row['ms_dense_b256']:.3f} ms vs bcoo "
              f"{row['ms_bcoo_b256']:.3f} ms" if "ms_dense_b256" in row
              else ""))
  return rows


def table(rows) -> str:
  head = ("model", "C", "kept", "dense .npz", "sparse .npz", "deflated",
          "BCOO in memory", "reload diff", "BCOO diff", "ms b=1 dense / BCOO",
          "ms b=256 dense / BCOO")
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    timing = [(f"{r['ms_dense_b1']:.3f} / {r['ms_bcoo_b1']:.3f}"
               if "ms_dense_b1" in r else "n/a"),
              (f"{r['ms_dense_b256']:.2f} / {r['ms_bcoo_b256']:.2f}"
               if "ms_dense_b256" in r else "n/a")]
    lines.append("| " + " | ".join([
        r["model"], str(r["compression"]), f"{r['kept']:,}",
        f"{r['bytes_dense_npz']:,}", f"{r['bytes_sparse_npz']:,}",
        f"{r['bytes_sparse_npz_deflated']:,}",
        f"{r['bytes_bcoo_in_memory']:,}",
        f"{r['max_abs_logit_diff_reloaded']:.1e}",
        (f"{r['max_abs_logit_diff_bcoo']:.1e}"
         if "max_abs_logit_diff_bcoo" in r else "n/a"), *timing]) + " |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--out", default=os.path.join(
      os.path.dirname(__file__), "results", "export.json"))
  args = parser.parse_args()
  compressions = (10, 60) if args.quick else (4, 10, 60)
  repeats = 10 if args.quick else 50
  common.log(f"export benchmark: compressions {compressions}, "
             f"{repeats} repeats")
  rows = run(compressions, repeats)
  print(table(rows))
  common.write_results(args.out, rows, repeats=repeats)


if __name__ == "__main__":
  main()
