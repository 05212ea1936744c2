"""`attnlab analyze` end to end on a run trained here (the induction smoke config, 2 steps),
and its one-line errors."""

import base64
import json
import os
import re
import shutil
import subprocess

import numpy as np
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


@pytest.fixture(scope="module")
def report(run_dir):
  """Runs `attnlab analyze` once; returns (exit code, stdout, report path)."""
  import contextlib
  import io
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    code = main(["analyze", "--workdir", run_dir, "--inputs", "3"])
  return code, buf.getvalue(), os.path.join(run_dir, "analysis", "report.html")


def test_analyze_writes_a_self_contained_report_and_the_numbers(run_dir, report):
  code, stdout, _ = report
  assert code == 0
  out = os.path.join(run_dir, "analysis")
  assert stdout.strip() == os.path.join(out, "report.html")
  page = open(os.path.join(out, "report.html")).read()
  assert "<script" not in page and "http" not in page.replace("http-equiv", "")  # nothing to fetch
  images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
  assert len(images) >= 8  # model view, prefix heatmap, rollout, relevancy, 2 head maps, pruning, qk
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
  qk = json.load(open(os.path.join(out, "qk.json")))  # [L][H] of 3 inputs x 16 positions, 2-D
  assert len(qk["queries"]) == 2 and len(qk["keys"][1]) == 2 and np.shape(qk["queries"][0][0]) == (48, 2)
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


# Loads a page in an iframe of a wrapper page (same file:// origin with
# --allow-file-access-from-files) and writes how many of its images failed to decode.
_WRAPPER = """<!DOCTYPE html><html><body><iframe id="f" src="%s" width="1200" height="800"></iframe>
<pre id="result">pending</pre><script>
var f = document.getElementById("f");
f.onload = function() {
  var imgs = f.contentDocument.images, broken = [];
  for (var i = 0; i < imgs.length; i++) if (!(imgs[i].complete && imgs[i].naturalWidth > 0)) broken.push(i);
  document.getElementById("result").textContent = "images=" + imgs.length + " broken=" + JSON.stringify(broken);
};
</script></body></html>"""


def _chromium_check(page: str, tmp_path) -> tuple[int, list, list]:
  """(images, indices of broken images, console lines) of `page` in headless Chromium."""
  wrapper = tmp_path / ("wrap_" + os.path.basename(page))
  wrapper.write_text(_WRAPPER % ("file://" + os.path.abspath(page)))
  proc = subprocess.run([shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
                         "--allow-file-access-from-files", "--virtual-time-budget=5000", "--enable-logging=stderr",
                         "--v=0", "--dump-dom", "file://" + str(wrapper)], capture_output=True, text=True, timeout=120)
  m = re.search(r"images=(\d+) broken=(\[[^<]*\])", proc.stdout)
  assert m, f"the wrapper page did not report (chromium rc={proc.returncode}): {proc.stderr[-500:]}"
  console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
  return int(m.group(1)), json.loads(m.group(2)), console


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
  _, _, page = report
  n, broken, console = _chromium_check(page, tmp_path)
  assert n >= 6 and broken == [] and console == []
  # canaries: a corrupted figure is reported broken; a console error is seen
  html = open(page).read()
  first = re.search(r'base64,([^"]+)"', html).group(1)
  bad = tmp_path / "bad.html"
  bad.write_text(html.replace(first, first[100:300], 1) + "<script>console.error('canary')</script>")
  n_bad, broken_bad, console_bad = _chromium_check(str(bad), tmp_path)
  assert broken_bad == [0] and any("canary" in line for line in console_bad)
