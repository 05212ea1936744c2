"""`attnlab report DIR` (attnlab/analysis/report/) and the Pareto front (attnlab/analysis/pareto.py):
on a hand-made sweep directory (two variants x two widths x two seeds, one failed row), the
table's mean ± std equal pandas' own, the figures exist, the cost is the cost contract's
measurement and the front is right; a bad DIR is one line with exit 2."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from attnlab import cli
from attnlab.analysis.pareto import pareto_mask
from attnlab.analysis.report.cli import write_report
from attnlab.analysis.report.runs import load_runs
from attnlab.sweep.grid import point_name

ACC = {("mha", 32): (0.70, 0.74), ("mha", 64): (0.90, 0.96), ("linear", 32): (0.50, 0.56), ("linear", 64): (0.61, 0.65)}
SEQ_LEN = 32


def fake_sweep(root) -> pd.DataFrame:
  """A results.csv as `attnlab sweep --axis seed=0,1` writes it (the axes, then
  `sweep.local.RESULT_COLUMNS` around the eval metrics), with one failed point that the
  report must leave out."""
  rows = []
  for (variant, width), accs in ACC.items():
    for seed, acc in enumerate(accs):
      rows.append({"arg.variant": variant, "model.d_model": width, "seed": seed, "status": "done",
                   "config_hash": "abc", "step": 100, "eval/accuracy": acc, "eval/examples": 512.0,
                   "eval/loss": 1.0 - acc + 0.01 * seed, "eval_examples": 512, "wall_s": 3.0,
                   "steps_per_s": 30.0, "params": width * 10, "attempts": 1})
  rows.append({"arg.variant": "linear", "model.d_model": 128, "seed": 0, "status": "failed"})
  frame = pd.DataFrame(rows)
  for (variant, width), _ in ACC.items():  # each point's run directory, as the trainer leaves it
    run_dir = os.path.join(root, point_name({"arg.variant": variant, "model.d_model": str(width)}))
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
      json.dump({"model": {"variant": variant, "d_model": width, "num_heads": 2, "attn": {"window": 3}},
                 "task": {"seq_len": SEQ_LEN}}, f)
  frame.to_csv(os.path.join(root, "results.csv"), index=False)
  return frame


def test_pareto_front_on_hand_chosen_points():
  # (cost, accuracy): c is dominated by b (cheaper and better); d ties a's accuracy at more cost.
  pts = {"a": (1, 0.5), "b": (2, 0.8), "c": (3, 0.7), "d": (4, 0.5), "e": (5, 0.9), "nan": (np.nan, 1.0)}
  on = pareto_mask(list(pts.values()), minimize=(True, False))
  assert {k for k, o in zip(pts, on) if o} == {"a", "b", "e"}
  # Both minimised (cost, error): the same points.
  on_err = pareto_mask([(c, 1 - a) for c, a in pts.values()], minimize=(True, True))
  assert on_err.tolist() == on.tolist()
  with pytest.raises(ValueError, match="objectives must be"):
    pareto_mask([(1, 2, 3)], minimize=(True, False))


def test_report_on_fake_sweep(tmp_path):
  frame = fake_sweep(tmp_path)
  out = write_report(str(tmp_path))  # T, width and heads from each point's config.json
  runs = load_runs(str(tmp_path))
  assert runs.axes == ["arg.variant", "model.d_model"] and runs.variant == "arg.variant"
  assert runs.metrics == ["eval/accuracy", "eval/loss"] and runs.skipped == 1
  # mean ± std equal pandas' own over the same finished rows
  done = frame[frame.status == "done"]
  want = done.groupby(["arg.variant", "model.d_model"], sort=False)[["eval/accuracy", "eval/loss"]].agg(["mean", "std"])
  table = out["table"].set_index(["arg.variant", "model.d_model"])
  for m in ("eval/accuracy", "eval/loss"):
    np.testing.assert_allclose(table[f"{m}_mean"], want[(m, "mean")].loc[table.index], rtol=1e-12)
    np.testing.assert_allclose(table[f"{m}_std"], want[(m, "std")].loc[table.index], rtol=1e-12)
  assert (table.seeds == 2).all() and (table.examples == "512").all()
  text = open(out["markdown"]).read()
  assert "| mha | 64 | 2 | 512 | 0.9300 ± 0.0424 |" in text  # std of (0.90, 0.96), ddof 1
  for name in ("report.md", "report_model_d_model.png", "report_cost.png"):
    assert os.path.getsize(tmp_path / name) > 0, name
  # Cost: the cost contract's program at the config's T, width and heads (head_dim = d_model / 2);
  # attn keys the variant does not take (window) are left out.
  costs = out["costs"].set_index(table.index)
  assert costs.cost_T.eq(SEQ_LEN).all() and np.isfinite(costs.temp_bytes).all()
  assert costs.cost_note[("linear", 32)] == "head_dim=16, num_heads=2"
  from attnlab.bench.cost import measure
  assert costs.flops[("linear", 32)] == measure("linear", (SEQ_LEN,), memory=False, num_heads=2, head_dim=16).flops[0]
  assert costs.flops[("mha", 64)] > costs.flops[("mha", 32)]
  # At T = 32 linear attention costs more FLOPs than mha at the same width (its [D, D] state
  # per token), and is less accurate here: both linear points are dominated; the front is mha.
  assert costs.flops[("linear", 32)] > costs.flops[("mha", 32)] and costs.flops[("linear", 64)] > costs.flops[("mha", 64)]
  front = dict(zip(table.index, out["fronts"]["flops"]))
  assert {k for k, on in front.items() if on} == {("mha", 32), ("mha", 64)}
  marked = [ln.split(" | ")[6] == "yes" for ln in text.splitlines() if ln.startswith("| arg.variant=")]
  assert marked == list(out["fronts"]["flops"])


def test_report_cli_and_bad_dir(tmp_path, capsys):
  fake_sweep(tmp_path)
  assert cli.main(["report", str(tmp_path), "--out", str(tmp_path / "out"), "--no-cost",
                   "--metric", "eval/loss"]) == 0
  assert os.path.isfile(tmp_path / "out" / "report.md") and not os.path.exists(tmp_path / "out" / "report_cost.png")
  capsys.readouterr()
  for bad in (tmp_path / "missing", tmp_path / "out"):  # no directory; a directory without results
    assert cli.main(["report", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("attnlab: error: report:") and "\n" not in err
  (tmp_path / "empty").mkdir()
  pd.DataFrame([{"arg.variant": "mha", "status": "failed"}]).to_csv(tmp_path / "empty" / "results.csv", index=False)
  assert cli.main(["report", str(tmp_path / "empty")]) == 2
  assert "no finished run" in capsys.readouterr().err


def test_reproduction_dir_without_sweep_columns(tmp_path):
  """A runs.csv (`attnlab reproduce`) with none of the sweep's new columns: test/ metrics,
  point, seed and run; lower-is-better metric leads when there is no accuracy."""
  rows = [{"horizon": h, "model": m, "seed": s, "run": f"h{h}_{m}_{s}", "status": "done",
           "test/mse": 0.4 + 0.001 * h / 96 + 0.01 * s, "test/mae": 0.4, "val/mse": 0.7, "wall_s": 1.0}
          for h in (96, 192) for m in ("a", "b") for s in (0, 1)]
  pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
  runs = load_runs(str(tmp_path))
  assert runs.axes == ["horizon", "model"] and runs.variant == "model" and runs.examples is None
  assert runs.metrics == ["test/mse", "test/mae"]
  out = write_report(str(tmp_path))  # no registered variant, no config: no cost, said in the table
  assert "no registered attention variant" in open(out["markdown"]).read()
  assert out["figures"] == [str(tmp_path / "report_horizon.png")]


def test_per_run_csv_without_status(tmp_path):
  """A hand-written per-run CSV (no status column: every row finished) named by --results;
  the axes stop at the seed column, the metric is the one named."""
  pd.DataFrame({"variant": ["mha", "mha", "linear"], "seed": [0, 1, 0], "accuracy": [50.0, 54.0, 51.0],
                "examples": [500, 500, 500], "lra": [71.4, 71.4, 75.3]}).to_csv(tmp_path / "runs_by_hand.csv", index=False)
  out = write_report(str(tmp_path), results="runs_by_hand.csv", metrics=["accuracy"], cost=False)
  assert list(out["table"].columns[:3]) == ["variant", "seeds", "examples"]
  assert out["table"].set_index("variant").loc["mha", "accuracy_mean"] == 52.0
  # No config.json: the variant from its axis, the cost contract's defaults, T from --seq-len.
  from attnlab.analysis.report.cost import point_attention
  runs = load_runs(str(tmp_path), "runs_by_hand.csv", ["accuracy"])
  assert point_attention(runs, {"variant": "mha"}, runs.frame, 16) == ("mha", 16, {})
  assert point_attention(runs, {"variant": "mha"}, runs.frame)[2] == "sequence length unknown (pass --seq-len)"
