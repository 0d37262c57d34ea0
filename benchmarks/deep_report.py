"""Table and plot of ``benchmarks/deep.py``'s results."""

from __future__ import annotations

import re
from typing import Any

NAMES = {"gsm": "GSM (paper: prune at the end)",
         "gsm_prune_step": "GSM, prune_step",
         "gmp_global": "GMP, global", "gmp_layer": "GMP, per layer"}


def _pct(x: float | None) -> str:
  return "-" if x is None else f"{100 * x:.2f}"


def table(results: dict[str, Any]) -> str:
  """A markdown table: accuracy (%) before/after the prune, val and test."""
  lines = ["| net | method | val before prune | val after | val after BN "
           "re-est. | test before | test after | test after BN re-est. | "
           "density | train min |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for net, entry in results.items():
    if "dense" not in entry:
      continue
    d = entry["dense"]
    lines.append(f"| {net} | dense ({d['epochs']} ep) | {_pct(d['val'])} | | |"
                 f" {_pct(d['test'])} | | | 1 | {d['train_s'] / 60:.1f} |")
    for method, row in entry.get("methods", {}).items():
      recal = row.get("after_prune_recal", {})
      lines.append(
          f"| {net} | {NAMES[method]} (+{row['epochs']} ep) | "
          f"{_pct(row['before_prune']['val'])} | "
          f"{_pct(row['after_prune']['val'])} | {_pct(recal.get('val'))} | "
          f"{_pct(row['before_prune']['test'])} | "
          f"{_pct(row['after_prune']['test'])} | {_pct(recal.get('test'))} |"
          f" {row['density']:.4f} | {row['train_s'] / 60:.1f} |")
  return "\n".join(lines)


def _group(path: str) -> str:
  if re.search(r"attn", path):
    return "attention"
  if re.search(r"mlp", path):
    return "MLP"
  if path.startswith(("conv", "embed")):
    return "first layer"
  if path.startswith("head"):
    return "classifier"
  if "proj" in path:
    return "shortcut"
  return "conv"


def plot(results: dict[str, Any], path: str, method: str = "gsm"
         ) -> str | None:
  """Bar chart of the per-layer densities ``method`` ends with; the path."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:  # pragma: no cover
    return None
  nets = [n for n, e in results.items() if method in e.get("methods", {})]
  if not nets:
    return None
  colours = {"first layer": "tab:red", "classifier": "tab:purple",
             "attention": "tab:blue", "MLP": "tab:orange", "conv": "tab:green",
             "shortcut": "tab:gray"}
  fig, axes = plt.subplots(len(nets), 1, figsize=(11, 3.2 * len(nets)),
                           squeeze=False)
  for ax, net in zip(axes[:, 0], nets):
    layers = results[net]["methods"][method]["layers"]
    groups = [_group(r["path"]) for r in layers]
    dens = [r["kept"] / r["total"] for r in layers]
    ax.bar(range(len(layers)), dens, color=[colours[g] for g in groups])
    ax.axhline(results[net]["methods"][method]["density"], color="k", lw=0.8,
               ls="--", label="global density")
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([r["path"] for r in layers], rotation=90, fontsize=6)
    ax.set_ylabel("density kept")
    ax.set_title(f"{net}: per-layer density after {NAMES[method]}")
    for g in dict.fromkeys(groups):
      ax.bar([0], [0], color=colours[g], label=g)
    ax.legend(fontsize=7, ncol=4)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
