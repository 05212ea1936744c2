"""Fuzzed input (hypothesis): every drawn config / data file gives a run or one clean error line.

Each example (`fuzz_strategies.cases()`) writes its files into a fresh folder and runs
`attnlab train` in-process (`cli.main`), with a per-example timeout, and `check` asserts one
of two outcomes:
- "error exit 2": exit code 2, exactly one stderr line starting "attnlab: error:", no
  "Traceback", nothing on stdout, and nothing compiled (jax's backend-compile events, as in
  tests/test_bad_input.py);
- "ran": exit code 0 after `setup()` succeeded (every static check passed) and nothing
  compiled. The training itself is replaced by a recorder for these cases (the trainer is
  tested elsewhere); `test_fuzzed_valid_inputs_train_one_step` trains two of them for real.
An exception escaping `cli.main`, a traceback, a second line, a compile before the error, or
a timeout fails the example: a bug in the validation.

Examples per run: ATTNLAB_FUZZ_EXAMPLES (default 40 in CI; the full run is 500). The draws
are derandomized, so a run is the same every time. ATTNLAB_FUZZ_REPORT=FILE appends one JSON
line per example (kind, outcome, the error line) for `python -m tests.fuzz_report FILE`.
Full run (experiments/fuzz/README.md):
  ATTNLAB_FUZZ_EXAMPLES=500 ATTNLAB_FUZZ_REPORT=/tmp/fuzz.jsonl python -m pytest -q -p no:cacheprof tests/test_fuzz_input.py
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import signal
import tempfile
import time
from typing import Callable
from unittest import mock

import jax
import pytest
from hypothesis import HealthCheck, Phase, given, settings

from attnlab import cli
from tests import fuzz_strategies as fs

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
EXAMPLES = int(os.environ.get("ATTNLAB_FUZZ_EXAMPLES", "40"))
TIMEOUT_S = float(os.environ.get("ATTNLAB_FUZZ_TIMEOUT_S", "60"))  # per example; setup takes ~0.1-3 s
REPORT = os.environ.get("ATTNLAB_FUZZ_REPORT", "")


class FuzzTimeout(BaseException):
  """Raised in the main thread when an example runs past its time (a hang). A BaseException,
  so that no `except Exception` in the code under test can swallow it."""


@dataclasses.dataclass
class Result:
  """What one in-process command did: exit `code` (None if it raised), the exception's
  name, stdout, stderr, the number of XLA compilations and the wall seconds."""
  code: int | None
  raised: str
  out: str
  err: str
  compiles: int
  seconds: float


@contextlib.contextmanager
def _deadline(seconds: float):
  """Raises FuzzTimeout in the main thread after `seconds` (SIGALRM)."""
  def on_alarm(*_):
    raise FuzzTimeout(f"no result after {seconds:g} s")
  previous = signal.signal(signal.SIGALRM, on_alarm)
  signal.setitimer(signal.ITIMER_REAL, seconds)
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def run_command(argv: list[str], main: Callable[[list[str]], int] = cli.main,
                timeout_s: float = TIMEOUT_S) -> Result:
  """Runs `main(argv)` in-process, capturing stdout / stderr, compile events and any exception."""
  compiles = []

  def listener(name, *_, **__):
    if name == COMPILE_EVENT:
      compiles.append(name)

  out, err = io.StringIO(), io.StringIO()
  code, raised = None, ""
  jax.monitoring.register_event_duration_secs_listener(listener)
  start = time.perf_counter()
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _deadline(timeout_s):
      code = main(argv)
  except FuzzTimeout as e:
    raised = f"timeout ({e})"
  except Exception as e:  # noqa: BLE001  (any escaping exception is what we look for)
    raised = f"{type(e).__name__}: {e}"
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  return Result(code, raised, out.getvalue(), err.getvalue(), len(compiles), time.perf_counter() - start)


def check(r: Result) -> str:
  """"error exit 2" or "ran" if `r` is one of the two allowed outcomes; else AssertionError."""
  assert not r.raised, f"an exception escaped: {r.raised}"
  assert "Traceback" not in r.err + r.out, f"a traceback was printed:\n{r.err}"
  assert r.compiles == 0, f"{r.compiles} XLA compilation(s) before the result (exit {r.code}): {r.err}"
  if r.code == 2:
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, f"{len(lines)} stderr lines instead of one:\n{r.err}"
    assert lines[0].startswith("attnlab: error: "), lines[0]
    assert not r.out.strip(), f"stdout besides the error: {r.out!r}"
    return "error exit 2"
  assert r.code == 0, f"exit code {r.code}: {r.err}"
  return "ran"


def _recorder(calls: list):
  """Stands in for the trainer's train / evaluate: records the prepared run, trains nothing."""
  from attnlab.train.trainer import _Run

  def action(config, workdir, *, run=None, **_):
    assert isinstance(run, _Run), "the command must pass the run setup() prepared"
    calls.append(config)
    return {"step": 0}

  return action


def materialise(case: fs.Case, root: str) -> list[str]:
  """Writes case.files under `root` and returns the `attnlab train` argv ("{dir}" -> root)."""
  for rel, data in case.files:
    path = os.path.join(root, rel)
    if data is None:
      os.makedirs(path, exist_ok=True)
    else:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(data)
  fill = lambda s: s.replace("{dir}", root)  # noqa: E731
  return ["train", "--config", fill(case.config), "--workdir", os.path.join(root, "workdir"),
          *map(fill, case.overrides)]


def run_case(case: fs.Case) -> tuple[str, Result]:
  """Runs `case` with training replaced by the recorder; returns (check's outcome, result)."""
  calls = []
  # cwd = the example's folder: a fuzzed relative path (task.vocab_file=2384) is written there.
  with tempfile.TemporaryDirectory() as root, contextlib.chdir(root), \
       mock.patch("attnlab.train.trainer.train", _recorder(calls)), \
       mock.patch("attnlab.train.early_stopping.train", _recorder(calls)):
    argv = materialise(case, root)
    r = run_command(argv)
    try:
      outcome = check(r)
    except AssertionError as e:
      raise AssertionError(f"{case.kind}: attnlab {' '.join(argv)}\n{e}") from None
    if outcome == "ran":
      assert len(calls) == 1, "exit 0 without the train command being reached"
  return outcome, r


# No shrinking: the cases are small already, and a hang would be re-run at the timeout many times.
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fs.cases())
def test_fuzzed_input_runs_or_fails_in_one_line(case):
  try:
    outcome, r = run_case(case)
  except AssertionError as e:
    if REPORT:
      with open(REPORT, "a") as f:
        f.write(json.dumps({"kind": case.kind, "outcome": "FAILED", "case": dataclasses.astuple(case)[:3],
                            "error": str(e)[:2000]}) + "\n")
    raise
  if REPORT:
    with open(REPORT, "a") as f:
      f.write(json.dumps({"kind": case.kind, "outcome": outcome, "seconds": round(r.seconds, 3),
                          "config": case.config, "overrides": case.overrides,
                          "error": r.err.strip() if outcome != "ran" else ""}) + "\n")


# ---- the checker bites ---------------------------------------------------------------------

def _raises_key_error(argv):
  raise KeyError("model")


def _two_lines(argv):
  import sys
  print("attnlab: error: first\nsecond line", file=sys.stderr)
  return 2


def _traceback_then_exit_2(argv):
  import sys
  print("Traceback (most recent call last):\n  ...", file=sys.stderr)
  return 2


def _compiles_then_fails(argv):
  import sys
  jax.jit(lambda x: x * 5 - 2)(jax.numpy.arange(3.0))  # a fresh function: one compilation
  print("attnlab: error: too late", file=sys.stderr)
  return 2


def _hangs(argv):
  time.sleep(30)
  return 0


def _exit_1(argv):
  import sys
  print("attnlab: error: wrong code", file=sys.stderr)
  return 1


@pytest.mark.parametrize("main, expected", [
    (_raises_key_error, "an exception escaped: KeyError"),
    (_two_lines, "2 stderr lines"),
    (_traceback_then_exit_2, "a traceback"),
    (_compiles_then_fails, "XLA compilation"),
    (_hangs, "timeout"),
    (_exit_1, "exit code 1"),
])
def test_the_checker_flags_each_bad_outcome(main, expected):
  with pytest.raises(AssertionError, match=expected):
    check(run_command(["train"], main=main, timeout_s=1.0))


def test_the_checker_passes_a_clean_error_and_a_clean_run():
  def clean_error(argv):
    from attnlab.errors import fail
    return fail("config.train.steps must be >= 1,\n got 0")  # fail() joins lines

  assert check(run_command(["train"], main=clean_error)) == "error exit 2"
  assert check(run_command(["train"], main=lambda argv: 0)) == "ran"


def test_a_fuzzed_bad_case_reaches_the_checker():
  """run_case on a known-bad drawn case gives the clean error (and the real cli is what ran)."""
  outcome, r = run_case(fs.Case("out of range", fs.BASES["mqar"][0], ("--config.train.steps=0",)))
  assert outcome == "error exit 2" and "train.steps" in r.err


# ---- valid fuzzed inputs train for real ------------------------------------------------------

@pytest.mark.parametrize("case", [
    fs.Case("non-UTF-8 (vocab=byte)", f"{fs.CONFIGS}/char_lm.py:smoke=True,vocab=byte",
            ("--config.task.path={dir}/text.txt", "--config.train.steps=1", "--config.train.warmup_steps=0",
             "--config.train.eval_every=0",
             "--config.train.checkpoint_every=0"),
            (("text.txt", fs.VALID_TEXT[:2000] + b"\xff\xfe" + fs.VALID_TEXT[2000:]),)),
])
def test_fuzzed_valid_inputs_train_one_step(case, tmp_path):
  """A valid fuzzed input the setup accepted also trains (one step, real trainer)."""
  argv = materialise(case, str(tmp_path))
  r = run_command(argv, timeout_s=300)
  assert r.code == 0 and not r.raised, r.raised or r.err
  assert json.loads(r.out.strip().splitlines()[-1])["step"] == 1
