"""Bad sizes and rates on the command line: one line on stderr, exit code 2, nothing compiled.

Each case runs `attnlab train` in-process on the MQAR smoke config. "Nothing compiled"
is checked by listening for jax's lowering events (every jit or eager computation is lowered
to StableHLO before XLA compiles it or loads it from the tests' persistent compilation cache,
so a cache hit counts too) and by the workdir staying empty.
"""

import os

import jax
import pytest

from attnlab import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "mqar.py") + ":smoke=True"
COMPILE_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"

# (config argument, overrides, a pattern the one line must contain)
BAD = {
    "d_model=0": ("", ["--config.model.d_model=0"], "model.d_model"),
    "warmup_steps<0": ("", ["--config.train.warmup_steps=-5"], "warmup_steps"),
    "weight_decay<0": ("", ["--config.train.weight_decay=-0.1"], "weight_decay"),
    "b2=1": ("", ["--config.train.b2=1.0"], "train.b2"),
    "unknown protocol": ("", ["--config.train.protocol=epochs"], "train.protocol"),
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
    # Found by tests/test_fuzz_input.py (each escaped as a traceback, or set up silently):
    "learning_rate=inf": ("", ["--config.train.learning_rate=inf"], "must be a finite number"),
    "weight_decay=nan": ("", ["--config.train.weight_decay=nan"], "train.weight_decay is nan"),
    "mlp_dim<0": ("", ["--config.model.mlp_dim=-3"], "model.mlp_dim must be >= 0"),
    "seed<0": ("", ["--config.seed=-1"], "config.seed must be >= 0"),
    "batch_size=10**21 (OverflowError)": ("", ["--config.train.batch_size=" + str(10**21)], "too large"),
    "d_model=10**12 (OverflowError)": ("", ["--config.model.d_model=" + str(10**12)], "too large"),
    "seq_len=10**11 (MemoryError)": ("", ["--config.task.seq_len=" + str(10**11)], "too large"),
    "dtype='(1,2' (numpy's SyntaxError)": ("", ["--config.model.dtype=(1,2"], "model.dtype must be a floating"),
    "eval_batches=10**12 (a hang)": ("", ["--config.train.eval_batches=" + str(10**12)], "examples in memory"),
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


def _png_folder(root, content=b"not a png"):
  for c in ("a", "b"):
    os.makedirs(os.path.join(root, c))
    with open(os.path.join(root, c, "x.png"), "wb") as f:
      f.write(content)
  return root


# Bad files found by tests/test_fuzz_input.py: name -> (make(tmp) -> (config argument, overrides),
# a pattern the one line must contain). Each escaped as a traceback before its fix.
BAD_FILES = {
    "image folder with a non-image .png": (
        lambda d: (f"configs/vision.py:smoke=True,dataset=folder,data_dir={_png_folder(d + '/img')}", []),
        "is not a readable image"),
    "forecast data is a directory": (
        lambda d: (f"configs/forecast.py:smoke=True,data={d}", []), "is not a file"),
    "char vocab_file without chars": (
        lambda d: (_write(d + "/v.json", b'{"x": 1}') and "configs/char_lm.py:smoke=True,vocab=char",
                   [f"--config.task.path={ROOT}/configs/mqar.py", f"--config.task.vocab_file={d}/v.json"]),
        "must hold"),
    "char vocab_file is a directory": (
        lambda d: ("configs/char_lm.py:smoke=True,vocab=char",
                   [f"--config.task.path={ROOT}/configs/mqar.py", f"--config.task.vocab_file={d}"]),
        "cannot write vocab_file"),
    "config file with a syntax error": (
        lambda d: (_write(d + "/c.py", b"def get_config(arg=None)\n") and d + "/c.py", []), "not valid Python"),
    "get_config raises KeyError": (
        lambda d: (_write(d + "/c.py", b"def get_config(arg=None):\n  raise KeyError('k')\n") and d + "/c.py:x", []),
        "raised KeyError"),
    "vision stem=10**12 (a hang)": (
        lambda d: ("configs/vision.py:smoke=True", ["--config.model.stem=" + str(10**12)]), "model.stem"),
    "config without train.steps": (
        lambda d: (_write(d + "/c.py", b"from attnlab import config_lib\ndef get_config(arg=None):\n"
                          b"  c = config_lib.base_config()\n  c.task.name = 'mqar'\n  del c.train.steps\n  return c\n") and d + "/c.py", []),
        "has no config.train.steps"),
}


def _write(path, data):
  with open(path, "wb") as f:
    f.write(data)
  return path


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_one_line_exit_2_before_compiling(case, tmp_path, capsys, compiles):
  make, pattern = BAD_FILES[case]
  data = tmp_path / "data"
  data.mkdir()
  config, overrides = make(str(data))
  config = config if os.path.isabs(config) else os.path.join(ROOT, config)
  code = cli.main(["train", "--config", config, "--workdir", str(tmp_path / "w"), *overrides])
  _, err = capsys.readouterr()
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1, err
  assert lines[0].startswith("attnlab: error:") and pattern in lines[0], lines[0]
  assert not compiles, "nothing may compile before the input is checked"
