"""`attnlab reproduce`: experiment files, the planned runs, the claims table, resumption."""

import json
import os
import textwrap

import pytest

from attnlab import cli
from attnlab.reproduce import experiment as E
from attnlab.reproduce import report as R
from attnlab.reproduce import runner

EXP = textwrap.dedent('''
    import ml_collections
    def get_experiment():
      return ml_collections.ConfigDict({
          "name": "toy", "config": "configs/forecast.py", "base_arg": "model=itransformer,smoke=True",
          "sweep": {"model": ["vanilla", "itransformer"], "horizon": [8, 16]}, "seeds": 2,
          "scales": {"paper": {"args": {}, "overrides": []},
                     "small": {"args": {"horizon": [8]}, "overrides": ["--config.train.epochs=1"], "seeds": 1}},
          "metrics": ["test/mse"],
          "cells": [{"point": {"horizon": 8}, "published": {"test/mse": 1.0}},
                    {"point": {"horizon": 16}, "published": {"test/mse": 2.0}}],
          "claims": [{"metric": "test/mse", "kind": "relative_error", "tolerance": 0.05},
                     {"metric": "test/mse", "kind": "improves", "over": {"model": "vanilla"},
                      "by": {"model": "itransformer"}, "tolerance": 0.0}],
          "source": "a toy table"})
''')


@pytest.fixture
def toy(tmp_path):
  path = tmp_path / "toy.py"
  path.write_text(EXP)
  return E.load_experiment(str(path))


def test_plan_is_the_sweep_times_the_seeds_and_scales_replace_axes(toy):
  runs = E.plan_runs(toy)
  assert len(runs) == 2 * 2 * 2
  assert runs[0].config_spec == "configs/forecast.py:model=vanilla,smoke=True,horizon=8,seed=0"
  assert len({r.name for r in runs}) == len(runs)
  small = E.plan_runs(toy, scale="small")
  assert [r.point["horizon"] for r in small] == [8, 8] and small[0].overrides == ("--config.train.epochs=1",)
  assert len(E.plan_runs(toy, scale="small", seeds=3)) == 6


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.replace('"seeds": 2,', ''), "missing field"),
    (lambda s: s.replace('"relative_error"', '"roughly"'), "claim kind"),
    (lambda s: s.replace('{"point": {"horizon": 8}', '{"point": {"lr": 8}'), "unswept"),
    (lambda s: s.replace('"source": "a toy table"', '"source": "t", "best_of": {"axis": "lr", "metric": "test/mse"}'),
     "best_of axis 'lr' is not a sweep axis"),
])
def test_bad_experiment_files_are_one_line_errors(tmp_path, edit, message):
  path = tmp_path / "bad.py"
  path.write_text(edit(EXP))
  with pytest.raises(ValueError, match=message):
    E.load_experiment(str(path))


def _results(runs, mse):
  """Fake finished results: mse(point, seed) per run."""
  return {r.name: {"status": "done", "test/mse": mse(r.point, r.seed), "wall_s": 1.0} for r in runs}


def test_claims_pass_and_fail_by_cell(toy):
  runs = E.plan_runs(toy)
  # horizon 8: itransformer 1.0 / 1.02 (mean 1.01), vanilla 1.2 -> cell mean 1.105 (+10.5%: fails 5%)
  mse = lambda p, s: {"vanilla": 1.2, "itransformer": 1.0 + 0.02 * s}[p["model"]] * (1 if p["horizon"] == 8 else 2)
  table = R.check_claims(toy, R.runs_frame(runs, _results(runs, mse)))
  h8 = table[table.cell == "horizon=8"].iloc[0]
  assert h8.n == 4 and h8.ours == pytest.approx((1.2 * 2 + 1.0 + 1.02) / 4)
  assert "fail (|err| 10.5%" in h8.claim and "pass (model=itransformer 1.01 vs model=vanilla 1.2" in h8.claim
  assert h8.mixes == "model"  # the cell pools both models: the markdown shows no pooled mean
  assert "| horizon=8 | test/mse | - (pools model) | 4 |" in R.markdown(toy, table, scale="paper")
  # itransformer worse than vanilla: the improves claim fails
  worse = lambda p, s: {"vanilla": 1.0, "itransformer": 1.05}[p["model"]]
  table = R.check_claims(toy, R.runs_frame(runs, _results(runs, worse)))
  assert "pass (|err| 2.5%" in table.claim.iloc[0] and "fail (model=itransformer" in table.claim.iloc[0]


def test_best_of_keeps_each_cells_best_learning_rate(tmp_path):
  """Zoology's "best of 4 learning rates per cell": each cell, and each side of an improves
  claim, is read at its own best lr; the canary: without best_of the pooled mean fails."""
  text = EXP.replace('"horizon": [8, 16]}', '"horizon": [8, 16], "lr": [1, 2]}').replace(
      '"source": "a toy table"', '"source": "a toy table", "best_of": {"axis": "lr", "metric": "test/mse", '
      '"higher_is_better": False}')
  path = tmp_path / "lr.py"
  path.write_text(text)
  exp = E.load_experiment(str(path))
  runs = E.plan_runs(exp)
  # vanilla is best at lr 1, itransformer at lr 2 (0.9 < 1.0: improves); its bad lr is worse.
  good = {"vanilla": "1", "itransformer": "2"}
  mse = lambda p, s: ({"vanilla": 1.0, "itransformer": 0.9}[p["model"]]
                      * (1 if p["horizon"] == 8 else 2)
                      * (1 if str(p["lr"]) == good[p["model"]] else {"vanilla": 5, "itransformer": 10}[p["model"]]))
  table = R.check_claims(exp, R.runs_frame(runs, _results(runs, mse)))
  h8 = table[table.cell.str.startswith("horizon=8")].iloc[0]
  assert "best lr=" in h8.cell and "pass (model=itransformer 0.9 vs model=vanilla 1" in h8.claim, h8.claim
  assert h8.mixes == "model"  # lr is chosen, not pooled
  del exp["best_of"]
  pooled = R.check_claims(exp, R.runs_frame(runs, _results(runs, mse)))
  assert "fail (model=itransformer" in pooled.claim.iloc[0]


def test_cells_without_finished_runs_are_na(toy):
  runs = E.plan_runs(toy)
  table = R.check_claims(toy, R.runs_frame(runs, {}))
  assert (table.n == 0).all() and set(table.claim) == {"n/a; n/a"}
  assert "| horizon=8 | test/mse | - | 0 | 1.0000 | - | n/a; n/a |" in R.markdown(toy, table, scale="paper")


def test_runner_trains_only_unfinished_runs_and_writes_the_table(toy, tmp_path, monkeypatch):
  calls = []

  def fake_run_point(spec, overrides, workdir):  # stands in for `attnlab train` in a subprocess
    calls.append(workdir)
    os.makedirs(workdir, exist_ok=True)
    result = {"status": "done", "test/mse": 1.0, "wall_s": 0.1}
    with open(os.path.join(workdir, "result.json"), "w") as f:
      json.dump(result, f)
    return result

  monkeypatch.setattr(runner, "run_point", fake_run_point)
  monkeypatch.setattr(runner, "check_point", lambda spec, overrides: None)
  runs = E.plan_runs(toy, scale="small")
  work = str(tmp_path / "work")
  runner.run_experiment(toy, runs[:1], work, scale="small")
  assert len(calls) == 1
  table = runner.run_experiment(toy, runs, work, scale="small")
  assert len(calls) == 2, "the finished run is not trained again"
  assert table.iloc[0].n == 2 and table.iloc[0].ours == 1.0
  for f in ("table.md", "table.csv", "runs.csv", "table.png"):
    assert os.path.isfile(os.path.join(work, f)), f


def test_the_repository_experiments_load_and_plan():
  for name in ("itransformer_etth1", "inverted_swap_etth1"):
    exp = E.load_experiment(name)
    assert E.plan_runs(exp, scale="small", data=__file__)
  # (small, paper) run counts: zoology 5 mixers x 2 lengths x 2 widths x 1 lr, and 8 x 3 x 4 x 4;
  # listops 8 variants x 1 / 3 seeds; hybrids 7 stacks x 1 / 3 seeds.
  counts = {"zoology_mqar": (20, 384), "lra_listops": (8, 24), "mqar_hybrids": (7, 21)}
  for name, want in counts.items():
    exp = E.load_experiment(name)
    assert tuple(len(E.plan_runs(exp, scale=s)) for s in ("small", "paper")) == want, name


@pytest.mark.parametrize("argv,message", [
    (["reproduce", "no_such_experiment"], "no experiment file"),
    (["reproduce", "itransformer_etth1", "--data", "/nonexistent.csv"], "data file not found"),
    (["reproduce", "itransformer_etth1", "--scale", "huge"], "no scale 'huge'"),
    (["reproduce"], "needs an experiment NAME"),
])
def test_bad_command_lines_exit_2(argv, message, capsys):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert message in err and len(err.strip().splitlines()) == 1
