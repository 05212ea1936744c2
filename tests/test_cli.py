"""The command line: listing, and bad input as one line with exit code 2 before compiling."""

import json
import os
import subprocess
import sys

import pytest

from attnlab import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MQAR = os.path.join(ROOT, "configs", "mqar.py")
CHAR = os.path.join(ROOT, "configs", "char_lm.py")


def test_list_json(capsys):
  assert cli.main(["list", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  names = {v["name"]: v for v in out["variants"]}
  for n in ("mha", "mqa", "gqa", "sliding_window", "sink_window"):
    assert n in names
  assert names["sliding_window"]["hyperparameters"]["window"] == 64
  assert set(names["mha"]["patterns"]) == {"causal-self", "noncausal-self", "causal-cross",
                                           "noncausal-cross", "decode"}
  assert "mqar" in out["tasks"] and "char_lm" in out["tasks"]


def test_list_table(capsys):
  assert cli.main(["list"]) == 0
  assert "sink_window" in capsys.readouterr().out


BAD_INPUTS = [
    ([MQAR + ":variant=nope"], "unknown attention variant 'nope'.*registered:.*mha"),
    ([MQAR, "--config.task.name=nope"], "unknown task 'nope'.*registered:.*mqar"),
    ([MQAR, "--config.model.num_heads=3"], "not divisible by"),
    ([MQAR, "--config.model.attn.num_kv_heads=3", "--config.model.num_heads=4"], "multiple of num_kv_heads"),
    ([MQAR, "--config.train.stepz=3"], "unknown config key 'train.stepz'"),
    ([MQAR, "--config.model.attn.windw=3"], "windw"),
    ([CHAR, "--config.task.path=/no/such/file.txt"], "/no/such/file.txt"),
    ([MQAR, "--config.mesh.data=3"], "but there are 1 devices"),
]


@pytest.mark.parametrize("config_args,message", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2(config_args, message, tmp_path, capsys):
  import re
  code = cli.main(["train", "--config", *config_args[:1], "--workdir", str(tmp_path), *config_args[1:]])
  err = capsys.readouterr().err.strip()
  assert code == 2
  assert len(err.splitlines()) == 1, err
  assert re.search(message, err), err
  assert not os.listdir(tmp_path), "nothing may be written before validation passes"


def test_fail_prints_one_line(capsys):
  from attnlab.errors import fail
  assert fail("first\n  second") == 2
  assert capsys.readouterr().err == "attnlab: error: first second\n"


def test_bad_override_value_is_one_line_exit_2(tmp_path, capsys):
  code = cli.main(["train", "--config", MQAR, "--workdir", str(tmp_path), "--config.train.steps=ten"])
  err = capsys.readouterr().err
  assert code == 2 and err == "attnlab: error: --config.train.steps expects an int, got 'ten'\n"


def test_bad_input_exit_code_from_console_script(tmp_path):
  r = subprocess.run([sys.executable, "-m", "attnlab.cli", "train", "--config", MQAR + ":variant=nope",
                      "--workdir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert r.returncode == 2
  assert r.stderr.strip().startswith("attnlab: error: unknown attention variant 'nope'")


def test_a_run_stopped_by_a_fault_is_one_line_exit_1(tmp_path, capsys, monkeypatch):
  """A NaN gradient injected at step 2 (attnlab.train.fault_hooks) stops `attnlab train`
  with one stderr line naming the step and the tensor, exit code 1 (not 2: the input was fine)."""
  from attnlab.train.fault_hooks import INJECT_NAN_ENV
  monkeypatch.setenv(INJECT_NAN_ENV, "loss@2")
  code = cli.main(["train", "--config", MQAR + ":smoke=True", "--workdir", str(tmp_path),
                   "--config.train.steps=3", "--config.train.log_every=1"])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 1, err
  assert err[-1].startswith("attnlab: error: FloatingPointError: non-finite") and "step 2" in err[-1], err
  assert not any("Traceback" in line for line in err)
  with open(tmp_path / "traceback.txt") as f:  # the traceback is kept in the workdir
    assert "FloatingPointError: non-finite" in f.read()
