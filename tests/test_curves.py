"""Learning curves: metrics.jsonl records -> long table -> plot."""

import json
import os

from attnlab.analysis.curves import curves_frame, plot_curves


def _write_run(path, records):
  os.makedirs(path)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)


def test_curves_frame_keeps_the_prefixed_metrics_of_every_run(tmp_path):
  _write_run(tmp_path / "a", [{"step": 10, "train/loss": 2.0},
                              {"step": 20, "eval/accuracy": 0.25, "eval/loss": 1.5}])
  _write_run(tmp_path / "b", [{"step": 20, "eval/accuracy": 0.75}])
  runs = {"a": str(tmp_path / "a"), "b": str(tmp_path / "b"), "empty": str(tmp_path / "none")}
  every = curves_frame(runs)
  assert len(every) == 4 and set(every.label) == {"a", "b"}
  evals = curves_frame(runs, prefix="eval/")
  assert sorted(evals.metric) == ["eval/accuracy", "eval/accuracy", "eval/loss"]
  acc = evals[evals.metric == "eval/accuracy"].set_index("label").value
  assert acc["a"] == 0.25 and acc["b"] == 0.75

  out = plot_curves(evals, ["eval/accuracy", "eval/loss"], str(tmp_path / "c.png"), title="t")
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
