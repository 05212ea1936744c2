"""`attnlab sweep`: the grid, validation before training, results, and skipping finished points."""

import os

import pandas as pd
import pytest

from attnlab import cli, sweep
from tests.train.subproc import runner_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MQAR = os.path.join(ROOT, "configs", "mqar.py")


def test_axes_and_grid():
  assert sweep.parse_axis("config.model.d_model=64,256") == ("model.d_model", ["64", "256"])
  assert sweep.parse_axis("model.variant=mha|based,mha") == ("model.variant", ["mha", "based,mha"])
  for bad in ("model.d_model", "=1,2", "model.d_model=1,,2"):
    with pytest.raises(ValueError, match="--axis"):
      sweep.parse_axis(bad)
  points = sweep.grid([("a", ["1", "2"]), ("b", ["x", "y", "z"])])
  assert len(points) == 6 and points[0] == {"a": "1", "b": "x"} and points[-1] == {"a": "2", "b": "z"}
  assert sweep.point_name(points[1]) == "a=1__b=y"
  point = {"arg.variant": "mega", "model.d_model": "64"}
  assert sweep.point_config("c.py:size=recall", point) == "c.py:size=recall,variant=mega"
  assert sweep.point_config("c.py", point) == "c.py:variant=mega"
  assert sweep.point_overrides(point, ["--config.seed=1"]) == ["--config.seed=1", "--config.model.d_model=64"]
  with pytest.raises(ValueError, match="repeated"):
    sweep.grid([("a", ["1"]), ("a", ["2"])])


def test_sweep_does_not_import_the_cli():
  """No import cycle: attnlab.cli imports the sweep's command; the sweep imports attnlab.errors."""
  import subprocess
  import sys
  code = "import sys, attnlab.sweep; assert 'attnlab.cli' not in sys.modules"
  subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_misspelt_key_stops_the_sweep_before_anything_runs(tmp_path, capsys):
  code = cli.main(["sweep", "--config", MQAR + ":smoke=True", "--workdir", str(tmp_path / "s"),
                   "--axis", "model.d_modle=16,32"])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1 and "unknown config key 'model.d_modle'" in err
  assert not os.path.exists(tmp_path / "s")


def test_sweep_trains_valid_points_records_invalid_ones_and_skips_finished(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(os, "environ", runner_env())  # CPU, shared compilation cache for the subprocess
  root = str(tmp_path / "sweep")
  args = ["sweep", "--config", MQAR + ":smoke=True", "--workdir", root,
          "--axis", "arg.variant=mha,linformer", "--config.train.steps=4"]
  assert cli.main(args) == 0
  df = pd.read_csv(os.path.join(root, "results.csv"))
  assert list(df["arg.variant"]) == ["mha", "linformer"]
  mha, linformer = df.iloc[0], df.iloc[1]
  assert mha.status == "done" and mha.step == 4 and 0 <= mha["eval/accuracy"] <= 1
  assert linformer.status == "invalid" and "causal" in linformer.error
  assert len(linformer.config_hash) == 12 and linformer.config_hash != mha.config_hash and linformer.seed == 0
  assert not os.path.exists(os.path.join(root, "arg.variant=linformer"))
  curves = pd.read_csv(os.path.join(root, "curves.csv"))  # every eval step of every trained point
  final = curves[(curves.step == 4) & (curves.metric == "eval/accuracy")]
  assert list(final["arg.variant"]) == ["mha"] and final.value.iloc[0] == mha["eval/accuracy"]
  assert os.path.getsize(os.path.join(root, "curves.png")) > 0
  log = os.path.join(root, "arg.variant=mha", "train.log")
  size = os.path.getsize(log)
  capsys.readouterr()
  assert cli.main(args) == 0  # a rerun trains nothing
  assert os.path.getsize(log) == size and "finished earlier" in capsys.readouterr().err
  again = pd.read_csv(os.path.join(root, "results.csv"))
  assert again.iloc[0]["eval/accuracy"] == mha["eval/accuracy"]
