"""`attnlab analyze` end to end on a run trained here (the induction smoke config, 2 steps),
and its one-line errors."""

import base64
import json
import os
import re

import pytest

from attnlab.cli import main

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "analysis", "induction_config.py")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  from attnlab.config_loading import load_config
  from attnlab.train.trainer import train
  workdir = str(tmp_path_factory.mktemp("run"))
  config = load_config(CONFIG + ":smoke=True", ["--config.train.steps=2", "--config.train.checkpoint_every=2",
                                                "--config.train.eval_every=2", "--config.train.warmup_steps=1"])
  train(config, workdir)
  return workdir


def test_analyze_writes_a_self_contained_report_and_the_numbers(run_dir, capsys):
  assert main(["analyze", "--workdir", run_dir, "--inputs", "3"]) == 0
  out = os.path.join(run_dir, "analysis")
  assert capsys.readouterr().out.strip() == os.path.join(out, "report.html")
  page = open(os.path.join(out, "report.html")).read()
  assert "<script" not in page and "http" not in page.replace("http-equiv", "")  # nothing to fetch
  images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
  assert len(images) >= 6  # model view, prefix heatmap, rollout overlay, relevancy, 2 head maps + pruning
  for data in images:
    assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
  maps = json.load(open(os.path.join(out, "maps.json")))
  assert len(maps["entropy"]) == 2 and len(maps["entropy"][0]) == 2  # [L, H]
  assert len(maps["pattern_prefix_matching"]) == 2
  roll = json.load(open(os.path.join(out, "rollout.json")))
  assert sum(roll["rollout"]) == pytest.approx(1.0) and sum(roll["flow"]) == pytest.approx(1.0)
  heads = json.load(open(os.path.join(out, "heads.json")))
  assert len(heads["importance"]) == 2 and len(heads["ablation"][0]) == 2
  assert heads["prune_fractions"][0] == 0.0 and heads["prune_importance"][0] == pytest.approx(heads["baseline"])
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert summary["inputs"] == 3 and summary["step"] == 2 and summary["explained_position"] == 15


@pytest.mark.parametrize("argv,message", [
    (["--methods", "maps,bogus"], "unknown 'bogus'"),
    (["--inputs", "0"], "--inputs must be >= 1"),
])
def test_bad_arguments_exit_2_with_one_line(run_dir, capsys, argv, message):
  assert main(["analyze", "--workdir", run_dir] + argv) == 2
  err = capsys.readouterr().err.strip()
  assert message in err and "\n" not in err


def test_missing_run_exits_2(tmp_path, capsys):
  assert main(["analyze", "--workdir", str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert "config.json not found" in err and "\n" not in err
