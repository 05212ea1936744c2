"""Measured cost of each point of a report: the cost contract's FLOPs and temporary memory
(`attnlab.bench.cost.measure`: one attention layer's forward + backward, batch 1, FLOPs
counted on the jaxpr, temp bytes from the compiled program) at the point's sequence length.

What is measured for a point: the attention variant, width and heads of its run's
config.json (model.variant, model.d_model, model.num_heads, model.attn.* that the variant
takes, model.causal), at T = `seq_len` if given, else the config's task.seq_len (the input
length: a model that re-tokenises, e.g. into patches or variates, attends over another
length; pass seq_len then). Without a config.json the variant comes from the variant axis,
the width from an axis named *d_model (else the cost contract's head_dim 64 per head) and T
must be given. A point whose variant is not registered, or whose program fails, gets no
cost and a note saying why.
"""

from __future__ import annotations

import functools
import json
import os

import pandas as pd

from attnlab.analysis.report.runs import RunTable


def _run_dirs(runs: RunTable, row: dict) -> list:
  """Where a row's run may live: its `run` column (a reproduction), else the sweep's point
  name of its point columns, with and without the seed (a seed column is an axis only when
  the seed was swept)."""
  from attnlab.sweep.grid import point_name
  if isinstance(row.get("run"), str):
    return [row["run"]]
  names = [point_name({c: str(row[c]) for c in runs.point_columns})]
  names.append(point_name({c: str(row[c]) for c in runs.point_columns if c != "seed"}))
  return list(dict.fromkeys(names))


def _config(runs: RunTable, part: pd.DataFrame) -> dict | None:
  """The config.json of the first run of `part` that has one (`_run_dirs`)."""
  for row in part.to_dict("records"):
    for name in _run_dirs(runs, row):
      path = os.path.join(runs.root, name, "config.json")
      if os.path.isfile(path):
        with open(path) as f:
          return json.load(f)
  return None


def _axis(point: dict, suffix: str):
  return next((v for k, v in point.items() if k.split(".")[-1] == suffix), None)


def point_attention(runs: RunTable, point: dict, part: pd.DataFrame, seq_len: int | None = None):
  """(variant, T, hyperparameters) that `bench.cost.measure` takes for one point, or
  (None, None, reason) when its cost cannot be measured."""
  from attnlab.attention import VARIANTS
  config = _config(runs, part)
  model = (config or {}).get("model", {})
  name = model.get("variant") or (point.get(runs.variant) if runs.variant else None)
  if name not in VARIANTS:
    return None, None, f"no registered attention variant ({name!r})"
  t = seq_len or (config or {}).get("task", {}).get("seq_len")
  if not t:
    return None, None, "sequence length unknown (pass --seq-len)"
  known = VARIANTS.get(name).hyperparameters()
  hp = {k: v for k, v in model.get("attn", {}).items() if k in known}
  if "causal" in model:
    hp["causal"] = bool(model["causal"])
  d_model = model.get("d_model") or _axis(point, "d_model")
  heads = model.get("num_heads") or _axis(point, "num_heads")
  if heads and "num_heads" in known:
    hp["num_heads"] = int(heads)
  if d_model:
    hp["head_dim"] = int(d_model) // int(hp.get("num_heads", known["num_heads"]))
  return name, int(t), hp


@functools.lru_cache(maxsize=None)
def _measure(name: str, seq_len: int, hp_items: tuple):
  from attnlab.bench.cost import measure
  m = measure(name, (seq_len,), memory=True, **dict(hp_items))
  return m.flops[0], m.temp_bytes[0]


def point_costs(runs: RunTable, table: pd.DataFrame, seq_len: int | None = None) -> pd.DataFrame:
  """Per row of `table` (`analysis.report.table.seed_table`): cost_variant, cost_T, flops,
  temp_bytes (NaN when not measured) and cost_note (why not, or the program failure)."""
  rows = []
  for point in table[runs.axes].to_dict("records") if runs.axes else [{}]:
    mask = pd.Series(True, index=runs.frame.index)
    for k, v in point.items():
      mask &= runs.frame[k] == v
    name, t, hp = point_attention(runs, point, runs.frame[mask], seq_len)
    row = {"cost_variant": name, "cost_T": t, "flops": float("nan"), "temp_bytes": float("nan"), "cost_note": ""}
    if name is None:
      row["cost_note"] = hp
    else:
      try:
        row["flops"], row["temp_bytes"] = _measure(name, t, tuple(sorted(hp.items())))
        row["cost_note"] = ", ".join(f"{k}={v}" for k, v in sorted(hp.items())) or "the variant's defaults"
      except Exception as e:  # a variant whose program does not build at this shape: no cost, say why
        row["cost_note"] = f"cost failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    rows.append(row)
  return pd.DataFrame(rows, index=table.index)


__all__ = ["point_attention", "point_costs"]
