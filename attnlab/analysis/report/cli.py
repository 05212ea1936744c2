"""`attnlab report DIR`: an offline report of a finished sweep or reproduction directory.

    attnlab report DIR [--out OUT] [--results FILE] [--metrics a,b] [--metric M] \
        [--seq-len T] [--no-cost]

DIR is a sweep directory (results.csv, `attnlab sweep`), a reproduction directory
(runs.csv, `attnlab reproduce`) or any directory with a per-run CSV named by --results
(axes first, then seed or status, then numeric metrics). Nothing trains and nothing is
downloaded. Written into OUT (default DIR):

  report.md           mean ± std over seeds of each final metric per point, with the seed
                      count and the examples each run evaluated; the cost table
  report_<axis>.png   each metric against each swept axis, one line per variant
  report_cost.png     the main metric (--metric; default the first accuracy-like one)
                      against measured FLOPs and temp memory, the Pareto front marked
                      (`attnlab.analysis.report.cost`: the cost contract's program at the run's
                      width and T = --seq-len or the config's task.seq_len)

A missing DIR, or one without results or without a finished run, is a one-line error with
exit code 2.
"""

from __future__ import annotations

import argparse
import os

from attnlab.errors import INPUT_ERRORS, fail


def register_cli(subparsers) -> argparse.ArgumentParser:
  """Adds `report` to the attnlab subparsers; sets `func` to `main`."""
  p = subparsers.add_parser("report", help="tables and plots of a sweep or reproduction directory (offline)",
                            description=__doc__.splitlines()[0])
  p.add_argument("dir", help="a sweep (results.csv) or reproduction (runs.csv) directory")
  p.add_argument("--out", help="where to write report.md and the PNGs (default DIR)")
  p.add_argument("--results", help="the per-run CSV inside DIR (default results.csv, else runs.csv)")
  p.add_argument("--metrics", help="comma-separated metric columns (default: the final eval/ or test/ ones)")
  p.add_argument("--metric", help="the metric plotted against cost (default: first accuracy-like metric)")
  p.add_argument("--seq-len", type=int, help="sequence length of the cost measurement (default: task.seq_len)")
  p.add_argument("--no-cost", action="store_true", help="skip the cost measurement and its plot")
  p.set_defaults(func=main)
  return p


def write_report(root: str, out: str | None = None, *, results: str | None = None, metrics=None,
                 metric: str | None = None, seq_len: int | None = None, cost: bool = True) -> dict:
  """Writes report.md and the figures into `out` (default `root`); returns {"markdown": path,
  "figures": [paths], "table": the seed table, "costs": the cost frame, "fronts": {cost:
  bool mask of the table's rows on its Pareto front} (both None without cost)}. Bad input
  raises ValueError / FileNotFoundError with a one-line reason."""
  from attnlab.analysis.report import plots
  from attnlab.analysis.report.runs import higher_is_better, load_runs, main_metric
  from attnlab.analysis.report.table import cost_markdown, seed_table, table_markdown
  runs = load_runs(root, results, metrics)
  metric = metric or main_metric(runs.metrics)
  if metric not in runs.metrics:
    raise ValueError(f"report: --metric {metric!r} is not among the metrics {', '.join(runs.metrics)}")
  out = out or root
  os.makedirs(out, exist_ok=True)
  table = seed_table(runs)
  figures = [plots.plot_axis(runs, table, a, os.path.join(out, plots.axis_figure_name(a)))
             for a in plots.swept_axes(runs, table)]
  skipped = f", {runs.skipped} not finished (left out)" if runs.skipped else ""
  text = [f"# Report: {os.path.basename(os.path.normpath(root))}", "",
          f"Written by `attnlab report` from `{os.path.basename(runs.source)}`: {len(runs.frame)} finished runs{skipped}; "
          "mean ± sample std over seeds (the mean alone for one seed).", "", table_markdown(runs, table)]
  costs = fronts = None
  if cost:
    from attnlab.analysis.report.cost import point_costs
    costs = point_costs(runs, table, seq_len)
    fronts = plots.cost_fronts(table, costs, metric)
    path = plots.plot_cost(runs, table, costs, metric, os.path.join(out, "report_cost.png"))
    figures += [path] if path else []
    text += ["## Against measured cost", "",
             "One attention layer's forward + backward at batch 1 (`attnlab.bench.cost`: FLOPs "
             "counted on the jaxpr, temp memory of the compiled program), at the run's variant, "
             "width and heads and at T = --seq-len, else the config's task.seq_len (the input length: "
             "a model that re-tokenises, into patches or variates, attends over another length); "
             f"the Pareto front of {metric} "
             f"({'higher' if higher_is_better(metric) else 'lower'} is better) against each cost.", "",
             cost_markdown(runs, table, costs, metric, fronts)]
  text += [f"![{os.path.basename(f)}]({os.path.basename(f)})" for f in figures]
  md = os.path.join(out, "report.md")
  with open(md, "w") as f:
    f.write("\n".join(text).rstrip() + "\n")
  return {"markdown": md, "figures": figures, "table": table, "costs": costs, "fronts": fronts}


def main(args) -> int:
  """Runs `attnlab report`; bad input -> one line, exit 2."""
  metrics = [m for m in (args.metrics or "").split(",") if m] or None
  try:
    result = write_report(args.dir, args.out, results=args.results, metrics=metrics, metric=args.metric,
                          seq_len=args.seq_len, cost=not args.no_cost)
  except INPUT_ERRORS as e:
    return fail(str(e))
  print(f"wrote {result['markdown']}" + "".join(f", {f}" for f in result["figures"]))
  return 0


__all__ = ["main", "register_cli", "write_report"]
