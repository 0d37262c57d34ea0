"""Reports of ``benchmarks/paper.py``: summaries, the table, claims, plots."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from paper_protocol import BASELINES, METHODS

TABLE_BEGIN = "<!-- paper-table:begin -->"
TABLE_END = "<!-- paper-table:end -->"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where ``paper.py --summarize`` writes its block unless ``--doc`` says
# otherwise. The README keeps a compact table of a few rows; the full table,
# the claims check and the per-layer densities live in the docs.
EVIDENCE_DOC = os.path.join(ROOT, "docs", "evidence.md")


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Mean and std over seeds for each (model, compression, method, budget)."""
  groups: dict[Any, list[dict[str, Any]]] = {}
  for r in rows:
    groups.setdefault((r["model"], r["compression"], r["method"],
                       r["base_steps"], r["prune_steps"]), []).append(r)
  order = {m: i for i, m in enumerate(METHODS)}
  out = []
  for (model, ratio, method, _, _), rs in sorted(
      groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][4],
                                      order[kv[0][2]])):
    stat = lambda k: (float(np.mean([r[k] for r in rs])),
                      float(np.std([r[k] for r in rs])))
    optional = lambda k: stat(k) if all(k in r for r in rs) else None
    layers = {k: float(np.mean([r["layer_density"][k] for r in rs]))
              for k in rs[0]["layer_density"]}
    out.append(dict(
        model=model, model_name=rs[0]["model_name"], compression=ratio,
        method=method, seeds=len(rs), dense_acc=stat("dense_acc"),
        acc=stat("acc"), val_acc=optional("val_acc"),
        acc_before_hard_prune=optional("acc_before_hard_prune"),
        seed_list=sorted(r["seed"] for r in rs),
        protocol=rs[0].get("protocol", "short"), scale=rs[0].get("scale", 1.0),
        base_steps=rs[0]["base_steps"], prune_steps=rs[0]["prune_steps"],
        batch_size=rs[0].get("batch_size"),
        wall_s=stat("wall_s"), density=rs[0]["density"],
        exact_density=all(r["kept"] == r["target_kept"] for r in rs),
        layer_density=layers))
  return out


def _pm(stat: tuple[float, float], scale: float = 100.0, digits: int = 2
        ) -> str:
  return f"{scale * stat[0]:.{digits}f} ± {scale * stat[1]:.{digits}f}"


def table(summary: list[dict[str, Any]]) -> str:
  head = ("| method | model | compression | budget | seeds | dense (%) | "
          "before hard prune (%) | pruned, test (%) | pruned, val (%) | "
          "per-layer density (%) | wall (s) |")
  lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
  for s in summary:
    layers = " / ".join(f"{100 * d:.2f}" for d in s["layer_density"].values())
    before = s.get("acc_before_hard_prune")
    val = s.get("val_acc")
    lines.append(
        f"| {s['method']} | {s['model_name']} | {s['compression']:.0f}x | "
        f"{s.get('protocol', 'short')} x{s.get('scale', 1.0):g} | "
        f"{len(s['seed_list']) if 'seed_list' in s else s['seeds']} | "
        f"{_pm(s['dense_acc'])} | {_pm(before) if before else '-'} | "
        f"{_pm(s['acc'])} | {_pm(val) if val else '-'} | {layers} | "
        f"{_pm(s['wall_s'], 1.0, 0)} |")
  return "\n".join(lines)


def compact_table(summary: list[dict[str, Any]]) -> str:
  """One row per (model, ratio, budget), one column per method: test
  accuracy, mean ± std over seeds (GSM also before its hard prune)."""
  methods = [m for m in METHODS if any(s["method"] == m for s in summary)]
  groups: dict[Any, dict[str, dict[str, Any]]] = {}
  for s in summary:
    key = (s["model"], s["compression"], -s["prune_steps"], _budget(s))
    groups.setdefault(key, {})[s["method"]] = s
  head = ["model, ratio", "budget", "seeds", "dense"] + methods
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for (_, ratio, _, budget), by in sorted(groups.items()):
    # Dense from the method run on the most seeds; a cell on fewer seeds
    # than that says how many.
    most = max(by.values(), key=lambda s: len(s["seed_list"]))
    seeds = len(most["seed_list"])
    cells = [f"{most['model_name']} {ratio:.0f}x", budget, str(seeds),
             _pm(most["dense_acc"])]
    for m in methods:
      s = by.get(m)
      if s is None:
        cells.append("-")
        continue
      cell = _pm(s["acc"])
      notes = []
      if m in ("gsm", "gsm_lossless") and s.get("acc_before_hard_prune"):
        notes.append(f"before prune {100 * s['acc_before_hard_prune'][0]:.2f}")
      if len(s["seed_list"]) < seeds:
        n = len(s["seed_list"])
        notes.append(f"{n} seed{'s' if n > 1 else ''}")
      cells.append(cell + (f" ({', '.join(notes)})" if notes else ""))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _budget(s: dict[str, Any]) -> str:
  return f"{s.get('protocol', 'short')} x{s.get('scale', 1.0):g}"


def claims(summary: list[dict[str, Any]]) -> list[str]:
  """The paper's claims, checked on these numbers (means over seeds).

  Methods are compared only within one budget (protocol and scale).
  """
  by: dict[Any, dict[str, Any]] = {}
  for s in summary:
    by[(s["model"], s["compression"], _budget(s), s["method"])] = s
  out = []
  names = {"gsm": "GSM", "gsm_lossless": "GSM + lossless option (ours)"}
  for (model, ratio, budget, method), s in sorted(by.items()):
    if method not in names or (model, ratio) not in (("lenet300", 60.0),
                                                     ("lenet5", 125.0)):
      continue
    gap = 100 * (s["dense_acc"][0] - s["acc"][0])
    out.append(f"- {names[method]} within 1.0 point of dense, "
               f"{s['model_name']} {ratio:.0f}x, {budget}, {s['seeds']} "
               f"seed(s), no fine-tuning: {'yes' if gap <= 1.0 else 'NO'} "
               f"(dense - GSM = {gap:.2f} points)")
  ticket_gaps = {}
  for (model, ratio, budget, method), s in sorted(by.items()):
    if method not in names:
      continue
    base = [by[(model, ratio, budget, b)] for b in BASELINES
            if (model, ratio, budget, b) in by]
    if base:
      best = max(base, key=lambda b: b["acc"][0])
      diff = 100 * (s["acc"][0] - best["acc"][0])
      out.append(f"- {names[method]} >= best baseline, {s['model_name']} "
                 f"{ratio:.0f}x, {budget}: {'yes' if diff >= 0 else 'NO'} "
                 f"({method} {_pm(s['acc'])}, best "
                 f"{best['method']} {_pm(best['acc'])}, {diff:+.2f} points)")
    tg = by.get((model, ratio, budget, "ticket_gsm"))
    tm = by.get((model, ratio, budget, "ticket_magnitude"))
    if tg and tm and method == "gsm":
      diff = 100 * (tg["acc"][0] - tm["acc"][0])
      ticket_gaps[(model, ratio, budget)] = diff
      out.append(f"- GSM ticket >= magnitude ticket, {s['model_name']} "
                 f"{ratio:.0f}x, {budget}: {'yes' if diff >= 0 else 'NO'} "
                 f"({_pm(tg['acc'])} vs {_pm(tm['acc'])}, {diff:+.2f} points)")
  if ticket_gaps:
    widest = max(ticket_gaps, key=ticket_gaps.get)
    out.append(f"- Largest ticket gap at the highest ratio: "
               f"{'yes' if widest[1] == max(r for _, r, _ in ticket_gaps) else 'NO'}"
               " (gaps: " + ", ".join(
                   f"{m} {r:.0f}x {b} {g:+.2f}" for (m, r, b), g in
                   sorted(ticket_gaps.items())) + ")")
  for (model, ratio, budget, method), s in sorted(by.items()):
    if method in names:
      layers = ", ".join(f"{k} {100 * d:.2f}%"
                         for k, d in s["layer_density"].items())
      out.append(f"- {method} per-layer density, {s['model_name']} "
                 f"{ratio:.0f}x, {budget} (uniform would be "
                 f"{100 / ratio:.2f}% each): {layers}")
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
    budgets = sorted({_budget(s) for s in rows}, reverse=True)
    for budget in budgets:
      for method in METHODS:
        pts = sorted((s["compression"], s["acc"]) for s in rows
                     if s["method"] == method and _budget(s) == budget)
        if pts:
          ax.errorbar([p[0] for p in pts], [100 * p[1][0] for p in pts],
                      [100 * p[1][1] for p in pts], marker="o", capsize=3,
                      ls="-" if budget == budgets[0] else ":",
                      label=method + (f" ({budget})" if len(budgets) > 1
                                      else ""))
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
    rows: dict[str, dict[str, Any]] = {}
    for s in summary:  # the largest budget of each method
      if s["model"] == model and s["compression"] == ratio:
        rows.setdefault(s["method"], s)
    shown = [m for m in ("gsm", "gsm_lossless", "magnitude_ft", "gmp", "snip") if m in rows]
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


def doc_block(commands: list[str], data_name: str, rows: list[dict[str, Any]],
              summary: list[dict[str, Any]], claims_list: list[str]) -> str:
  """The Markdown block: commands (one a line), budgets, table, claims."""
  budgets = sorted({(r["protocol"], r["scale"], r["batch_size"], r["model"],
                     r["base_steps"], r["prune_steps"]) for r in rows})
  steps = "; ".join(f"{p} x{s:g}, batch {b}, {m}: base {bs} steps, K {k}"
                    for p, s, b, m, bs, k in budgets)
  return ("Commands (merged by `--summarize`):\n\n```\n" +
          "\n".join(commands) + "\n```\n\n" +
          f"Data: {data_name}. Budgets: {steps}. Test accuracy (%), mean ± "
          "std over seeds; no fine-tuning for gsm and gsm_lossless; wall time "
          "excludes compilation.\n\n" + compact_table(summary) +
          "\n\nClaims check (means over seeds):\n\n" +
          "\n".join(claims_list))


def write_doc(path: str, block: str) -> None:
  """Replaces the table block of ``path`` (or creates the file)."""
  if os.path.basename(path).lower() == "readme.md":
    raise ValueError(
        f"--doc {path}: the README keeps a compact table of a few rows; "
        f"write the full table to the docs (default {EVIDENCE_DOC}).")
  block = f"{TABLE_BEGIN}\n{block}\n{TABLE_END}"
  text = open(path).read() if os.path.exists(path) else ""
  if TABLE_BEGIN in text and TABLE_END in text:
    head, rest = text.split(TABLE_BEGIN, 1)
    text = head + block + rest.split(TABLE_END, 1)[1]
  else:
    text = text + ("\n" if text else "") + block + "\n"
  with open(path, "w") as f:
    f.write(text)
