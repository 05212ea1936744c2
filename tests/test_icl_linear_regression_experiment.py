"""experiments/icl_linear_regression.py: it loads and plans, and its claims pass and fail as
they should on fake result tables (no training)."""

import pytest

from attnlab.reproduce import experiment as E
from attnlab.reproduce import report as R

NAME = "icl_linear_regression"


def _table(nmse_at_n, growth):
  """The claims table for fake results: nmse_at_n[(variant, heads)] and growth[variant]."""
  exp = E.load_experiment(NAME)
  runs = E.plan_runs(exp, scale="small")
  results = {}
  for r in runs:
    key = (r.point["variant"], r.point["heads"])
    g = growth[r.point["variant"]] + 0.001 * r.seed
    results[r.name] = {"status": "done", "eval/nmse_train_len": nmse_at_n[key] + 0.001 * r.seed,
                       "eval/nmse_max_len": nmse_at_n[key] + g, "eval/length_growth": g,
                       "eval/length_gain": -g, "wall_s": 1.0}
  return R.check_claims(exp, R.runs_frame(runs, results))


def _claims(table, cell, metric):
  return table[(table.cell == cell) & (table.metric == metric)].claim.iloc[0]


def test_the_experiment_loads_and_plans_both_scales():
  exp = E.load_experiment(NAME)
  small, paper = E.plan_runs(exp, scale="small"), E.plan_runs(exp, scale="paper")
  assert len(small) == 4 * 2 and len(paper) == 2 * 4 * 3
  assert all(r.config_spec.startswith("configs/icl_regression.py:") for r in small)


def test_claims_pass_when_the_paper_holds():
  table = _table({("mha", 1): 0.25, ("mha", 4): 0.15, ("linear", 1): 0.20, ("linear", 4): 0.20},
                 {"mha": -0.03, "linear": 0.30})
  both = _claims(table, "all", "eval/nmse_train_len")
  assert both.startswith("pass") and "; pass" in both
  assert _claims(table, "variant=mha, heads=1", "eval/length_gain").startswith("pass")
  assert _claims(table, "variant=linear, heads=1", "eval/length_growth").startswith("pass")


@pytest.mark.parametrize("nmse,growth,cell,metric,verdicts", [
    # single-head softmax as good as multi-head: the first part of claim 1 fails
    ({("mha", 1): 0.15, ("mha", 4): 0.15, ("linear", 1): 0.20, ("linear", 4): 0.2},
     {"mha": 0.0, "linear": 0.3}, "all", "eval/nmse_train_len", ("fail", "pass")),
    # linear attention better than multi-head softmax: the second part fails
    ({("mha", 1): 0.25, ("mha", 4): 0.15, ("linear", 1): 0.10, ("linear", 4): 0.2},
     {"mha": 0.0, "linear": 0.3}, "all", "eval/nmse_train_len", ("pass", "fail")),
    # softmax's error rises by 0.05 from N to 2N: claim 2 fails for softmax
    ({("mha", 1): 0.25, ("mha", 4): 0.15, ("linear", 1): 0.2, ("linear", 4): 0.2},
     {"mha": 0.05, "linear": 0.3}, "variant=mha, heads=4", "eval/length_gain", ("fail",)),
    # linear attention's error falls with longer prompts: claim 2 fails for linear
    ({("mha", 1): 0.25, ("mha", 4): 0.15, ("linear", 1): 0.2, ("linear", 4): 0.2},
     {"mha": 0.0, "linear": -0.03}, "variant=linear, heads=1", "eval/length_growth", ("fail",)),
])
def test_claims_fail_when_the_paper_does_not_hold(nmse, growth, cell, metric, verdicts):
  claims = _claims(_table(nmse, growth), cell, metric).split("; ")
  assert [c.split(" ")[0] for c in claims] == list(verdicts)
