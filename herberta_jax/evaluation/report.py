"""Writes an evaluation report: metrics, every prediction, a Markdown summary and the paper's plots.

`write_report(out_dir, records, metrics)` produces
  metrics.json       the metrics dict as given (round-trips through json.loads)
  breakdown.json     the same metrics per language and per relation
  predictions.jsonl  every record, errors included, one JSON object a line
  report.md          tables: overall, per language, per relation, confusion matrix; truncation; first errors
  f1_per_language.png, f1_heatmap.png, entity1_vs_entity2.png, and f1_vs_train_size.png when training sizes
  of at least two evaluated languages are known (HERBERTa Figs. 4, 5 and 6).
Figures are in percent, as in the paper. Plots use matplotlib's object API with the Agg canvas, so the report
never touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from herberta_jax.evaluation import metrics as metrics_lib
from herberta_jax.model import decoding as spans

MAX_ERRORS_LISTED = 30
_METRIC_TITLES = {"relation": "Relation", "entity1": "Entity 1", "entity2": "Entity 2",
                  "entity_pair": "Entity pair", "combined": "Combined"}


def write_report(out_dir: str | pathlib.Path, records: Sequence[dict], metrics: Mapping, *,
                 train_sizes: Mapping[str, int] | None = None, title: str = "HERBERTa evaluation") -> pathlib.Path:
  """Writes the report files into `out_dir` (created if needed) and returns its path.

  Args:
    out_dir: output directory.
    records: prediction records as `herberta_jax.metrics` describes them; `text` (the clean sentence), when
      present, lets the error list show tagged sentences.
    metrics: `metrics.compute_metrics(records)`; its `negative_label` decides the negative class.
    train_sizes: training examples per language, for the F1-vs-training-size plot.
    title: heading of report.md.
  """
  records = list(records)
  if not records:
    raise ValueError("write_report: no prediction records; evaluate on a non-empty test split")
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  negative = metrics.get("negative_label", metrics_lib.NEGATIVE_LABEL)
  per_lang = metrics_lib.breakdown(records, "lang", negative)
  per_relation = metrics_lib.breakdown(records, "relation", negative)
  by_lang_records: dict[str, list[dict]] = {}
  for record in records:
    by_lang_records.setdefault(str(record.get("lang", "")), []).append(record)
  heat = {lang: metrics_lib.breakdown(rows, "relation", negative) for lang, rows in sorted(by_lang_records.items())}

  (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
  (out / "breakdown.json").write_text(json.dumps({"per_language": per_lang, "per_relation": per_relation},
                                                 indent=2, default=_json_default) + "\n")
  with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False, default=_json_default) + "\n")

  sizes = {lang: int(n) for lang, n in (train_sizes or {}).items() if lang in per_lang}
  plots = [_plot_f1_per_language(out / "f1_per_language.png", per_lang, metrics),
           _plot_heatmap(out / "f1_heatmap.png", heat),
           _plot_entity1_vs_entity2(out / "entity1_vs_entity2.png", per_lang)]
  if len(sizes) >= 2:
    plots.append(_plot_f1_vs_train_size(out / "f1_vs_train_size.png", per_lang, sizes))

  labels = metrics_lib.labels_of(records, negative)
  matrix = metrics_lib.confusion_matrix(records, labels, negative)
  markdown = _markdown(title, records, metrics, per_lang, per_relation, labels, matrix, sizes, negative,
                       [p.name for p in plots])
  (out / "report.md").write_text(markdown, encoding="utf-8")
  return out


def _json_default(value):
  """numpy scalars and arrays in records (spans straight from a device batch) as plain JSON."""
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"report: cannot write a {type(value).__name__} to JSON: {value!r}")


# ----------------------------------------------------------------------------------------------- Markdown


def _pct(x: float) -> str:
  return f"{100 * x:.2f}"


def _cell(text) -> str:
  """Table-safe text: a `|` would end the cell, and `<e1>`-like tags would vanish as HTML."""
  return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _code(text: str) -> str:
  """An inline code span that survives backticks and line breaks in the text."""
  text = " ".join(text.splitlines())  # a line break would end the list item
  longest = 0
  run = 0
  for ch in text:
    run = run + 1 if ch == "`" else 0
    longest = max(longest, run)
  fence = "`" * (longest + 1)
  pad = " " if text.startswith("`") or text.endswith("`") else ""
  return f"{fence}{pad}{text}{pad}{fence}"


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return lines + [""]


def _tagged(text: str | None, e1, e2) -> str:
  """The sentence with its entity tags, or the bare spans when the record carries no text."""
  e1 = None if e1 is None else tuple(int(x) for x in e1)
  e2 = None if e2 is None else tuple(int(x) for x in e2)
  if text is None:
    return f"e1={e1} e2={e2}"
  try:
    return spans.tag_text(text, e1 or (0, 0), e2 or (0, 0))
  except ValueError as e:  # a span outside the text: show it rather than lose the whole report
    return f"{text}  [spans e1={e1} e2={e2}: {e}]"


def _markdown(title, records, metrics, per_lang, per_relation, labels, matrix, sizes, negative, plots) -> str:
  lines = [f"# {title}", "",
           f"{metrics['count']} sentences in {len(per_lang)} language(s). Micro-averaged precision, recall and F1 "
           f"in percent, ignoring `{negative}` (TACRED convention). Combined = relation right and both entity "
           "spans exact.", ""]
  lines += ["## Overall", ""]
  lines += _table(["Metric", "Precision", "Recall", "F1", "TP", "Predicted", "Gold"],
                  [[_METRIC_TITLES[name], _pct(m["precision"]), _pct(m["recall"]), _pct(m["f1"]), m["tp"],
                    m["predicted"], m["gold"]] for name, m in ((n, metrics[n]) for n in metrics_lib.METRIC_NAMES)])
  lines += [f"Entity 1 exact-match accuracy on gold positives: {_pct(metrics['e1_accuracy'])}; "
            f"entity 2: {_pct(metrics['e2_accuracy'])}.", "",
            f"Truncated sentences (an entity past the tokenizer's cut; scored as misses): {metrics['truncated']} "
            f"of {metrics['count']}.", ""]

  lines += ["## Per language", ""]
  header = ["Lang", "Sentences", "Relation F1", "Entity 1 F1", "Entity 2 F1", "Entity pair F1", "Combined P",
            "Combined R", "Combined F1", "Truncated"]
  if sizes:
    header.insert(2, "Train size")
  rows = []
  for lang, m in per_lang.items():
    row = [_cell(lang or "(none)"), m["count"], _pct(m["relation"]["f1"]), _pct(m["entity1"]["f1"]),
           _pct(m["entity2"]["f1"]), _pct(m["entity_pair"]["f1"]), _pct(m["combined"]["precision"]),
           _pct(m["combined"]["recall"]), _pct(m["combined"]["f1"]), m["truncated"]]
    if sizes:
      row.insert(2, sizes.get(lang, "-"))
    rows.append(row)
  lines += _table(header, rows)

  lines += ["## Per relation", "",
            "Precision counts rows predicted with the relation, recall rows whose gold label it is.", ""]
  lines += _table(["Relation", "Gold", "Predicted", "Relation P", "Relation R", "Relation F1", "Combined F1"],
                  [[_cell(label), m["relation"]["gold"], m["relation"]["predicted"], _pct(m["relation"]["precision"]),
                    _pct(m["relation"]["recall"]), _pct(m["relation"]["f1"]), _pct(m["combined"]["f1"])]
                   for label, m in per_relation.items()])

  lines += ["## Confusion matrix", "", "Rows: gold label; columns: predicted label (numbered as the rows).", ""]
  lines += _table(["Gold \\ Pred"] + [str(i + 1) for i in range(len(labels))],
                  [[f"{i + 1} {_cell(label)}"] + [str(v) if v else "." for v in matrix[i]]
                   for i, label in enumerate(labels)])

  errors = [r for r in records if metrics_lib.is_error(r, negative)]
  lines += [f"## Errors (first {min(len(errors), MAX_ERRORS_LISTED)} of {len(errors)})", ""]
  for record in errors[:MAX_ERRORS_LISTED]:
    gold, pred = record["gold"], record["pred"]
    note = " (truncated)" if record.get("truncated") else ""
    if pred.get("error"):
      note += f" (predictor error: {pred['error']})"
    lines += [f"- **{_cell(record.get('id', '?'))}** ({_cell(record.get('lang', ''))}){note}: gold "
              f"`{gold['label']}`, predicted `{pred.get('label')}`",
              f"  - gold: {_code(_tagged(record.get('text'), gold['e1'], gold['e2']))}",
              f"  - pred: {_code(_tagged(record.get('text'), pred.get('e1'), pred.get('e2')))}"]
  lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
  return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- plots


def _save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
  FigureCanvasAgg(fig)
  fig.savefig(path, dpi=120)
  return path


def _plot_f1_per_language(path: pathlib.Path, per_lang: dict, overall: Mapping) -> pathlib.Path:
  """Combined F1 per language, best first, with the overall figure as a dashed line (paper Fig. 4, left)."""
  langs = sorted(per_lang, key=lambda lang: -per_lang[lang]["combined"]["f1"])
  values = [100 * per_lang[lang]["combined"]["f1"] for lang in langs]
  fig = Figure(figsize=(max(5.0, 0.6 * len(langs) + 2), 4.2), layout="constrained")
  ax = fig.add_subplot()
  bars = ax.bar([lang or "(none)" for lang in langs], values, color="#4c72b0")
  # Values sit inside the bar tops (outside for short bars), and the overall line runs behind the bars, so no
  # value is crossed by the line.
  tall = [v >= 12 for v in values]
  ax.bar_label(bars, labels=[f"{v:.1f}" if t else "" for v, t in zip(values, tall)], padding=-12, fontsize=8,
               color="white")
  ax.bar_label(bars, labels=["" if t else f"{v:.1f}" for v, t in zip(values, tall)], padding=2, fontsize=8)
  ax.axhline(100 * overall["combined"]["f1"], color="#c44e52", linestyle="--", linewidth=1.2, zorder=0.5,
             label=f"overall {100 * overall['combined']['f1']:.1f}")
  ax.set_ylim(0, 105)
  ax.set_xlabel("Language")
  ax.set_ylabel("Combined F1 (%)")
  ax.set_title("Combined F1 per language")
  ax.legend(loc="lower left", fontsize=8)
  return _save(fig, path)


def _plot_heatmap(path: pathlib.Path, heat: dict[str, dict]) -> pathlib.Path:
  """Combined F1 per relation (rows) and language (columns); blank where a relation has no gold or predicted
  row in a language (paper Fig. 4, right)."""
  langs = list(heat)
  relations = sorted({label for per_rel in heat.values() for label in per_rel})
  grid = np.full((len(relations), len(langs)), np.nan)
  for j, lang in enumerate(langs):
    for i, label in enumerate(relations):
      if label in heat[lang]:
        grid[i, j] = 100 * heat[lang][label]["combined"]["f1"]
  fig = Figure(figsize=(max(5.0, 0.55 * len(langs) + 3.5), max(3.0, 0.3 * len(relations) + 1.5)),
               layout="constrained")
  ax = fig.add_subplot()
  if not relations:  # all-negative data: say so instead of drawing an empty grid
    ax.text(0.5, 0.5, "No positive relation in the gold data or the predictions", ha="center", va="center")
    ax.set_axis_off()
    return _save(fig, path)
  image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=100, aspect="auto")
  ax.set_facecolor("#dddddd")
  ax.set_xticks(range(len(langs)), [lang or "(none)" for lang in langs])
  ax.set_yticks(range(len(relations)), relations, fontsize=8)
  if grid.size <= 600:  # annotations stay readable up to ~36 relations x 16 languages
    for i in range(len(relations)):
      for j in range(len(langs)):
        if not math.isnan(grid[i, j]):
          ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7,
                  color="black" if grid[i, j] > 60 else "white")
  ax.set_xlabel("Language")
  ax.set_ylabel("Relation (gold or predicted)")
  ax.set_title("Combined F1 (%) per relation and language")
  fig.colorbar(image, ax=ax, label="Combined F1 (%)")
  return _save(fig, path)


def _plot_f1_vs_train_size(path: pathlib.Path, per_lang: dict, sizes: dict[str, int]) -> pathlib.Path:
  """Combined F1 against training-set size, log x axis (paper Fig. 5)."""
  langs = sorted(sizes, key=sizes.get)
  x = [max(sizes[lang], 1) for lang in langs]
  y = [100 * per_lang[lang]["combined"]["f1"] for lang in langs]
  fig = Figure(figsize=(6.5, 4.4), layout="constrained")
  ax = fig.add_subplot()
  ax.scatter(x, y, color="#4c72b0", zorder=3)
  columns: dict[int, list[tuple[float, str]]] = {}  # languages of one training-set size share one column
  for lang, xi, yi in zip(langs, x, y):
    columns.setdefault(xi, []).append((yi, lang))
  for k, (xi, points) in enumerate(columns.items()):
    if len(points) > 1:  # one label block beside the column, best first, instead of labels on top of each other
      points.sort(reverse=True)
      ax.annotate("\n".join(f"{lang or '(none)'} {yi:.1f}" for yi, lang in points), (xi, points[0][0]),
                  textcoords="offset points", xytext=(8, 0), va="top", fontsize=8)
      continue
    yi, lang = points[0]
    # Neighbours on the size axis alternate above and below their point, so close labels do not collide.
    ax.annotate(_point_label(lang, yi, len(langs)), (xi, yi), textcoords="offset points",
                xytext=(4, 6 if k % 2 == 0 else -13), fontsize=8)
  ax.set_xscale("log")
  ax.set_xlim(min(x) / 2, max(x) * 2)
  ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))  # labels even within one decade
  ax.xaxis.set_major_formatter(ticker.FuncFormatter(_count_label))
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())  # "2x10^4"-style minor labels crowd the axis
  ax.set_ylim(0, 105)
  ax.set_xlabel("Training examples (log scale)")
  ax.set_ylabel("Combined F1 (%)")
  ax.set_title("Combined F1 vs training-set size")
  ax.grid(True, which="major", alpha=0.3)
  return _save(fig, path)


def _point_label(lang: str, value: float, n_points: int) -> str:
  """A point's language, with its value while there are few enough points for the labels not to crowd."""
  return f"{lang or '(none)'} {value:.1f}" if n_points <= 6 else (lang or "(none)")


def _count_label(value: float, _position) -> str:
  """10 -> "10", 1000 -> "1k", 1e6 -> "1M"."""
  for scale, suffix in ((1e6, "M"), (1e3, "k")):
    if value >= scale:
      return f"{value / scale:g}{suffix}"
  return f"{value:g}"


def _plot_entity1_vs_entity2(path: pathlib.Path, per_lang: dict) -> pathlib.Path:
  """Entity 1 F1 against entity 2 F1 per language, with the diagonal (paper Fig. 6)."""
  langs = list(per_lang)
  x = [100 * per_lang[lang]["entity1"]["f1"] for lang in langs]
  y = [100 * per_lang[lang]["entity2"]["f1"] for lang in langs]
  # Zoom on the data (to the nearest 10 below it): languages tend to cluster near the top right.
  low = max(0.0, 10 * math.floor((min(x + y) - 5) / 10))
  high = 101.0
  fig = Figure(figsize=(5.4, 5.2), layout="constrained")
  ax = fig.add_subplot()
  ax.plot([low, 100], [low, 100], color="gray", linestyle="--", linewidth=1, label="entity 1 = entity 2")
  ax.scatter(x, y, color="#55a868", zorder=3)
  for lang, xi, yi in zip(langs, x, y):
    label = f"{lang or '(none)'} ({xi:.1f}, {yi:.1f})" if len(langs) <= 6 else (lang or "(none)")
    right = xi > low + 0.7 * (high - low)  # labels of points near the right edge go to their left
    ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(-5 if right else 5, 4), fontsize=8,
                ha="right" if right else "left")
  ax.set_xlim(low, high)
  ax.set_ylim(low, high)
  ax.set_aspect("equal")
  ax.set_xlabel("Entity 1 F1 (%)")
  ax.set_ylabel("Entity 2 F1 (%)")
  ax.set_title("Entity 1 vs entity 2 F1 per language")
  ax.legend(loc="lower right", fontsize=8)
  ax.grid(True, alpha=0.3)
  return _save(fig, path)
