"""The vision and time-series overlays of `attnlab analyze` (issue 17, point 3).

End to end: a vision run (digits, shifted-window attention over the 4 x 4 patch grid) and
an iTransformer forecasting run, each written here by the trainer's own pieces (setup, the
initial state, config.json, checkpoint 0: a trained run differs only in its numbers, and
compiling a train step would triple this file's time; tests/analysis/test_analyze_cli.py
analyses a trained run), analysed with rollout (and relevancy, vision): the report holds
the patch-grid and variate overlays and the JSON the numbers over the grid's patches and
the named variates. The figures themselves: the patch overlay puts a patch's relevance at
that patch of the image (row-major; the transposed grid, the canary, does not), the
variate overlay labels its bars with the variate names.
"""

import contextlib
import io
import json
import os

import numpy as np
import pytest

from attnlab.analysis import figures
from attnlab.cli import main

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
RUNS = {
    "vision": ("configs/vision.py:variant=shifted_window,smoke=True", []),
    "forecast": ("configs/forecast.py:model=itransformer,smoke=True,protocol=steps", []),
}

def write_run(config, workdir):
  """config.json and checkpoint 0 (the initial state) in workdir, as `attnlab train` writes them."""
  from attnlab.train import metrics as mt
  from attnlab.train.checkpoint import Checkpointer
  from attnlab.train.state import init_state
  from attnlab.train.trainer import setup
  run = setup(config)
  mt.write_config(workdir, config)
  checkpointer = Checkpointer(workdir, keep=None)
  checkpointer.save(0, init_state(run.init_fn, run.shardings, run.rules), run.task.train_iterator())
  checkpointer.close()


@pytest.fixture(scope="module", params=list(RUNS))
def analysed(request, tmp_path_factory):
  """(task, workdir, exit code, report html) of a run analysed (rollout; relevancy too for vision)."""
  from attnlab.config_loading import load_config
  spec, extra = RUNS[request.param]
  workdir = str(tmp_path_factory.mktemp(request.param))
  write_run(load_config(os.path.join(ROOT, spec), ["--config.train.batch_size=4"] + extra), workdir)
  with contextlib.redirect_stdout(io.StringIO()):
    methods = "rollout,relevancy" if request.param == "vision" else "rollout"  # one gradient compile (budget)
    code = main(["analyze", "--workdir", workdir, "--inputs", "2", "--methods", methods])
  page = open(os.path.join(workdir, "analysis", "report.html")).read()
  return request.param, workdir, code, page


def test_report_has_the_overlay_of_the_run_kind(analysed):
  task, workdir, code, page = analysed
  assert code == 0
  kind = {"vision": "patches", "forecast": "variates"}[task]
  for method in ("rollout", "relevancy") if task == "vision" else ("rollout",):
    assert f'alt="{method} {kind} overlay"' in page
    assert f'alt="{method} tokens overlay"' not in page
  out = os.path.join(workdir, "analysis")
  summary = json.load(open(os.path.join(out, "summary.json")))
  roll = json.load(open(os.path.join(out, "rollout.json")))
  assert summary["positions"] == kind
  if task == "vision":  # 8 x 8 digits, patch 2: a 4 x 4 grid, mean pooling: the mean of all rows
    assert summary["length"] == 16 and len(roll["rollout"]) == 16 and "mean over all patch" in summary["explained"]
  else:  # the generated series' variates (target OT last), then the time-feature tokens
    labels = summary["position_labels"]
    assert "OT" in labels and labels.index("OT") < len(labels) - 1 and labels[-1].startswith("time feature")
    assert summary["length"] == len(labels) == len(roll["rollout"]) and "'OT'" in summary["explained"]
  assert sum(roll["rollout"]) == pytest.approx(1.0) and sum(roll["flow"]) == pytest.approx(1.0)
  if task == "vision":
    assert len(json.load(open(os.path.join(out, "relevancy.json")))["relevancy"]) == 16


def _panel(fig, index):
  """RGB pixels [h, w, 3] of axes `index` of a drawn figure."""
  fig.canvas.draw()
  buf = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.float64)
  box = fig.axes[index].get_window_extent()
  top = buf.shape[0]
  return buf[top - int(box.y1) + 3:top - int(box.y0) - 3, int(box.x0) + 3:int(box.x1) - 3]


def _hot_corner(heat, grid):
  """Which quadrant of the overlay panel is hottest (jet: red minus blue), as (row, col) in {0, 1}."""
  fig = figures.patch_overlay({"r": heat}, np.zeros((8, 8, 1)), grid)
  px = _panel(fig, 1)
  figures.plt.close(fig)
  h, w = px.shape[0] // 2, px.shape[1] // 2
  red = {(i, j): float((px[i * h:(i + 1) * h, j * w:(j + 1) * w, 0] - px[i * h:(i + 1) * h, j * w:(j + 1) * w, 2]).mean())
         for i in (0, 1) for j in (0, 1)}
  return max(red, key=red.get)


def test_patch_overlay_puts_a_patch_where_it_is_on_the_image():
  heat = np.zeros(16)
  heat[3] = 1.0  # patch (row 0, column 3): the top-right corner
  assert _hot_corner(heat, (4, 4)) == (0, 1)
  assert _hot_corner(heat.reshape(4, 4).T.ravel(), (4, 4)) == (1, 0)  # canary: the transposed grid


def test_variate_overlay_labels_the_variates():
  names = ["x0", "x1", "OT"]
  fig = figures.variate_overlay({"rollout": [0.2, 0.1, 0.7]}, names, np.eye(3), "m")
  labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
  widths = [p.get_width() for p in fig.axes[0].patches]
  figures.plt.close(fig)
  assert labels == names and widths == pytest.approx([0.2, 0.1, 0.7])


@pytest.mark.parametrize("pooling,t", [("cls", 17), ("mean", 16), ("mean", 12)])
def test_vision_view_explains_the_pooled_row(pooling, t):
  """The class token's row without its own column (cls), the mean of all rows (mean); a
  token count off the grid falls back to the token view."""
  import types
  import ml_collections
  from attnlab.analysis.overlays import input_view
  config = ml_collections.ConfigDict({"task": {"name": "vision", "model": "vit"},
                                      "model": {"pooling": pooling, "patch_size": 2, "stem_pool": False}})
  view = input_view(types.SimpleNamespace(config=config), np.zeros((8, 8, 1)), t, pos=t - 1, labels=np.arange(t))
  m = np.random.default_rng(0).random((t, t))
  if t == 12:
    assert view.kind == "tokens" and np.allclose(view.explain(m), m[t - 1])
  elif pooling == "cls":
    assert view.kind == "patches" and np.allclose(view.explain(m), m[0, 1:])
  else:
    assert view.kind == "patches" and np.allclose(view.explain(m), m.mean(0))
