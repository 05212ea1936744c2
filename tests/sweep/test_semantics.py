"""`attnlab sweep` semantics: seeds and their summary, the results columns, failures with
their traceback and retries, a killed sweep's rerun, and --executor ray without ray."""

import math
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest

from attnlab import cli, sweep
from attnlab.config_loading import load_config
from attnlab.sweep.local import KILL_AFTER_POINTS_ENV, RESULT_COLUMNS
from tests.train.subproc import runner_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "mqar.py") + ":smoke=True"


def _final_results(log_path):
  """The number of final-result lines (one per training run that reached its end) in a train.log."""
  with open(log_path) as f:
    return sum(ln.startswith("{") for ln in f)


def test_summary_aggregates_over_seeds_and_skips_unfinished_points():
  results = pd.DataFrame({
      "v": ["a", "a", "a", "b", "b"], "seed": [0, 1, 2, 0, 1],
      "status": ["done", "done", "failed", "done", "invalid"],
      "eval/accuracy": [0.5, 0.7, math.nan, 0.9, math.nan], "eval/examples": [8.0, 8.0, math.nan, 8.0, math.nan]})
  s = sweep.summarize(results, ["v", "seed"])
  assert list(s.columns) == ["v", "seeds", "eval/accuracy_mean", "eval/accuracy_std"]  # the count is no metric
  a, b = s.iloc[0], s.iloc[1]
  assert (a.v, a.seeds, b.v, b.seeds) == ("a", 2, "b", 1)
  assert a["eval/accuracy_mean"] == pytest.approx(0.6) and a["eval/accuracy_std"] == pytest.approx(0.02 ** 0.5)
  assert b["eval/accuracy_mean"] == 0.9 and math.isnan(b["eval/accuracy_std"])
  text = sweep.summary_markdown(s)
  assert "| a | 2 | 0.6000 ± 0.1414 |" in text and "| b | 1 | 0.9000 |" in text
  alone = sweep.summarize(results[results.v == "a"].drop(columns="v"), ["seed"])  # only a seed axis: one row
  assert len(alone) == 1 and alone.seeds.iloc[0] == 2


def test_config_hash_is_stable_and_sees_every_leaf():
  h = sweep.config_hash(load_config(SMOKE))
  assert len(h) == 12 and h == sweep.config_hash(load_config(SMOKE))
  assert h != sweep.config_hash(load_config(SMOKE, ["--config.seed=1"]))


def test_ray_executor_without_ray_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
  code = cli.main(["sweep", "--config", SMOKE, "--workdir", str(tmp_path / "s"), "--axis", "seed=0,1",
                   "--executor", "ray"])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1 and 'pip install -e ".[ray]"' in err
  assert not os.path.exists(tmp_path / "s")
  code = cli.main(["sweep", "--config", SMOKE, "--workdir", str(tmp_path / "s"), "--axis", "seed=0,1",
                   "--address", "auto"])  # a Ray address without Ray as the executor
  assert code == 2 and "--address is for --executor ray" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "s")


def test_a_failing_point_keeps_its_traceback_and_is_retried(tmp_path, monkeypatch):
  """lr 1e38 overflows: a non-finite loss at step 3, a FloatingPointError in the train subprocess."""
  monkeypatch.setattr(os, "environ", runner_env())
  root = str(tmp_path / "sweep")
  args = ["sweep", "--config", SMOKE, "--workdir", root, "--axis", "train.learning_rate=1e38",
          "--config.train.steps=3"]
  assert cli.main(args + ["--retries", "1"]) == 1
  row = pd.read_csv(os.path.join(root, "results.csv")).iloc[0]
  assert row.status == "failed" and row.attempts == 2 and "non-finite loss at step 3" in row.error
  point = os.path.join(root, "train.learning_rate=1e38")
  with open(os.path.join(point, "error.txt")) as f:
    error = f.read()
  assert "Traceback (most recent call last)" in error and "FloatingPointError: non-finite loss" in error
  assert "_check_finite" in error  # the frames, not only the last line
  log = os.path.join(point, "train.log")
  with open(log) as f:
    assert f.read().count("attnlab: error: FloatingPointError") == 2  # two attempts in one invocation
  assert not os.path.exists(os.path.join(point, "result.json"))
  assert cli.main(args) == 1  # a rerun tries the failed point again, once (--retries 0)
  with open(log) as f:
    assert f.read().count("attnlab: error: FloatingPointError") == 3


def test_a_killed_sweep_rerun_trains_every_point_exactly_once(tmp_path, monkeypatch, capsys):
  """The sweep SIGKILLs itself once the first point is recorded (the second may be training);
  the rerun skips the first, trains the second, and records seeds, identity and speed."""
  root = str(tmp_path / "sweep")
  args = ["sweep", "--config", SMOKE, "--workdir", root, "--axis", "seed=0,1", "--config.train.steps=3"]
  killed = subprocess.run([sys.executable, "-m", "attnlab", *args], cwd=ROOT, capture_output=True, text=True,
                          env=runner_env(extra={KILL_AFTER_POINTS_ENV: "1"}), timeout=600)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  first = os.path.join(root, "seed=0", "train.log")
  assert _final_results(first) == 1
  assert pd.read_csv(os.path.join(root, "results.csv")).status.tolist() == ["done"]
  monkeypatch.setattr(os, "environ", runner_env())
  capsys.readouterr()
  assert cli.main(args) == 0
  assert "seed=0: finished earlier" in capsys.readouterr().err
  for seed in (0, 1):
    assert _final_results(os.path.join(root, f"seed={seed}", "train.log")) == 1  # trained once to its end
  df = pd.read_csv(os.path.join(root, "results.csv"))
  assert [c for c in RESULT_COLUMNS if c not in df.columns] == []
  assert df.status.tolist() == ["done", "done"] and df.seed.tolist() == [0, 1] and (df.step == 3).all()
  assert df.config_hash.nunique() == 2 and (df.params > 0).all() and df.params.nunique() == 1
  assert (df.eval_examples == 8).all() and (df.steps_per_s > 0).all() and (df.wall_s > 0).all()
  summary = pd.read_csv(os.path.join(root, "summary.csv"))
  assert summary.seeds.tolist() == [2]
  assert summary["eval/accuracy_mean"].iloc[0] == pytest.approx(df["eval/accuracy"].mean())
  with open(os.path.join(root, "summary.md")) as f:
    head = f.readline()
  assert head.startswith("| seeds | ") and "eval/accuracy" in head and "eval/examples" not in head
