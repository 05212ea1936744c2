"""Bad sizes and rates on the command line: one line on stderr, exit code 2, nothing compiled.

Each case runs `attnlab train` in-process on the MQAR smoke config. "Nothing compiled"
is checked by listening for jax's backend-compile events (every XLA compilation, jit or
eager, records one) and by the workdir staying empty.
"""

import os

import jax
import pytest

from attnlab import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "mqar.py") + ":smoke=True"
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

# (config argument, overrides, a pattern the one line must contain)
BAD = {
    "d_model=0": ("", ["--config.model.d_model=0"], "model.d_model"),
    "d_model<0": ("", ["--config.model.d_model=-8"], "model.d_model"),
    "num_heads=0": ("", ["--config.model.num_heads=0"], "model.num_heads"),
    "num_layers=0": ("", ["--config.model.num_layers=0"], "model.num_layers"),
    "steps=0": ("", ["--config.train.steps=0"], "train.steps"),
    "batch_size=0": ("", ["--config.train.batch_size=0"], "batch_size"),
    "learning_rate<0": ("", ["--config.train.learning_rate=-1"], "learning_rate"),
    "learning_rate=0": ("", ["--config.train.learning_rate=0"], "learning_rate"),
    "head_dim not an integer": ("", ["--config.model.num_heads=3"], "not divisible by"),  # 32 / 3
    "chunk_size=0 (gla)": (",variant=gla", ["--config.model.attn.chunk_size=0"], "chunk_size"),
    "chunk_size<0 (linear)": (",variant=linear", ["--config.model.attn.chunk_size=-1"], "chunk_size"),
}


@pytest.fixture
def compiles():
  """The names of the XLA compilations that happen during the test."""
  events = []

  def listener(name, *_, **__):
    if name == COMPILE_EVENT:
      events.append(name)

  jax.monitoring.register_event_duration_secs_listener(listener)
  yield events
  jax.monitoring.unregister_event_duration_listener(listener)


def test_the_compile_listener_sees_a_compilation(compiles):
  jax.jit(lambda x: x * 3 + 1)(jax.numpy.arange(5.0))  # a new function: one compile
  assert compiles


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_before_compiling(case, tmp_path, capsys, compiles):
  arg, overrides, pattern = BAD[case]
  code = cli.main(["train", "--config", SMOKE + arg, "--workdir", str(tmp_path), *overrides])
  out, err = capsys.readouterr()
  lines = err.strip().splitlines()
  assert code == 2, err
  assert len(lines) == 1, err
  assert lines[0].startswith("attnlab: error:") and pattern in lines[0], lines[0]
  assert not out.strip()
  assert not compiles, "nothing may compile before the input is checked"
  assert not os.listdir(tmp_path), "nothing may be written before the input is checked"
