"""Hypothesis strategies of bad (and some valid) `attnlab train` input, each drawn as a `Case`.

A Case is a command line (the config argument and `--config.a.b=v` overrides; "{dir}" stands
for the example's own temporary folder), the files to write into that folder first, and the
class of input it is ("wrong type", "out of range", "non-UTF-8", ...; "valid" for inputs
left as they are). The classes, and which strategy draws them:

- `override_cases`: an existing leaf of one of the smoke configs (`BASES`) set to a value
  of the wrong type, out of range (zero, negative, absurdly large), NaN / inf, an empty
  string, an unknown name; a misspelt (unknown) key; or a valid override.
- `config_file_cases`: a config file that is missing, not Python, has no get_config, whose
  get_config raises or returns a non-ConfigDict, deletes a key the base config has
  ("missing key"), or a bad `:arg` string.
- `forecast_csv_cases`, `text_file_cases`, `labeled_csv_cases`, `image_folder_cases`: the data
  files the configs name (config.task.data, task.path / task.vocab_file, task.train_path,
  task.data_dir): empty, header only, too short, missing columns, non-numeric or NaN cells,
  malformed CSV, non-UTF-8 bytes, random bytes, a directory, non-image files, mixed image
  sizes, one class, no images; and a valid file of each kind.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import string

import ml_collections
from hypothesis import strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


@dataclasses.dataclass(frozen=True)
class Case:
  """One drawn input: `kind` (its class), the config argument and overrides ("{dir}" = the
  example's folder) and `files` ((relative path, bytes, or None for a directory), ...)."""
  kind: str
  config: str
  overrides: tuple[str, ...] = ()
  files: tuple[tuple[str, bytes | None], ...] = ()


def _text(n: int, seed: int) -> bytes:
  """`n` bytes of lower-case words (valid UTF-8), deterministic in `seed`."""
  words = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "slept", "here"]
  out, i = [], seed
  while sum(len(w) + 1 for w in out) < n:
    i = (i * 1103515245 + 12345) % (1 << 31)
    out.append(words[i % len(words)])
  return " ".join(out).encode()[:n]


def _labeled_csv(rows: int, classes: int = 2) -> bytes:
  """A `label,text` CSV with a header and `rows` rows over `classes` labels."""
  lines = ["label,text"] + [f"{i % classes},{_text(20, i).decode()}" for i in range(rows)]
  return ("\n".join(lines) + "\n").encode()


VALID_TEXT = _text(4000, 0)  # char_lm smoke: seq_len 32, batch 8, val 10% -> >= 8 val windows
VALID_LABELED = _labeled_csv(60)

# name -> (config argument, overrides and files that make it a valid smoke run).
BASES = {
    "mqar": (f"{CONFIGS}/mqar.py:smoke=True", (), ()),
    "listops": (f"{CONFIGS}/listops.py:smoke=True", (), ()),
    "icl_regression": (f"{CONFIGS}/icl_regression.py:smoke=True", (), ()),
    "vision": (f"{CONFIGS}/vision.py:smoke=True", (), ()),
    "forecast": (f"{CONFIGS}/forecast.py:smoke=True", (), ()),
    "char_lm": (f"{CONFIGS}/char_lm.py:smoke=True", ("--config.task.path={dir}/text.txt",),
                (("text.txt", VALID_TEXT),)),
    "text_classification": (f"{CONFIGS}/text_classification.py:smoke=True,train_path={{dir}}/train.csv",
                            (), (("train.csv", VALID_LABELED),)),
}


@functools.cache
def leaves(base: str) -> tuple[tuple[str, type], ...]:
  """(dotted key, type of its value) of every leaf of BASES[base]'s config (task.name excluded)."""
  from attnlab.config_loading import load_config
  spec = BASES[base][0].replace("{dir}", "/nonexistent")
  out = []

  def walk(node: ml_collections.ConfigDict, prefix: str) -> None:
    for key, value in node.items():
      name = f"{prefix}{key}"
      if isinstance(value, ml_collections.ConfigDict) and len(value):
        walk(value, name + ".")
      elif name != "task.name":
        out.append((name, type(value)))

  walk(load_config(spec), "")
  return tuple(out)


def _on_base(base: str, kind: str, overrides=(), files=()) -> Case:
  """A Case on BASES[base] with extra overrides (after the base's) and files."""
  config, base_overrides, base_files = BASES[base]
  return Case(kind, config, tuple(base_overrides) + tuple(overrides), tuple(base_files) + tuple(files))


WRONG_TYPE = {int: ["1.5", "abc", "[1, 2]", "1e3", "0x", "{}"],
              float: ["abc", "1,5", "[0.1]", "1e", "--1"],
              bool: ["maybe", "2", "yes please", "-1"],
              str: ["(1, 2", "]"],
              ml_collections.ConfigDict: ["3", "abc", ""]}
HUGE_INTS = [10**12, 2**63, 10**21, 10**30]
HUGE_FLOATS = [1e30, 1e300, -1e300]
NAMES = st.text(string.ascii_lowercase + "_0123456789", min_size=1, max_size=12)


@st.composite
def override_cases(draw) -> Case:
  """A leaf of a base config set to a bad (or valid) value, or an unknown key."""
  base = draw(st.sampled_from(sorted(BASES)))
  key, kind_of = draw(st.sampled_from(leaves(base)))
  kind = draw(st.sampled_from(["wrong type", "out of range", "non-finite", "empty string",
                               "unknown name", "unknown key", "valid"]))
  if kind == "wrong type":
    value = draw(st.sampled_from(WRONG_TYPE.get(kind_of, ["abc"])))
  elif kind == "out of range" and kind_of is int:
    value = str(draw(st.one_of(st.integers(-10**6, 0), st.sampled_from(HUGE_INTS))))
  elif kind == "out of range" and kind_of is float:
    value = repr(draw(st.one_of(st.floats(-1e6, 0.0), st.sampled_from(HUGE_FLOATS))))
  elif kind == "out of range":  # no range for strings and bools: a number instead
    value = str(draw(st.integers(-10**6, 10**6)))
  elif kind == "non-finite":
    value = draw(st.sampled_from(["nan", "inf", "-inf", "NaN", "Infinity"]))
  elif kind == "empty string":
    value = ""
  elif kind == "unknown name":  # a name no registry has, where the config names something
    key = draw(st.sampled_from([k for k, t in leaves(base) if t is str] + ["task.name", "model.variant"]))
    value = "zz" + draw(NAMES)
  elif kind == "unknown key":
    section = draw(st.sampled_from(["", "model.", "task.", "train.", "mesh.", "model.attn.",
                                    "model.layers.0.", "nosuchsection."]))
    key, value = section + "zz" + draw(NAMES), str(draw(st.integers(0, 9)))
  else:  # a valid value: a small positive change of a size or count, or the leaf's own type
    key = draw(st.sampled_from(["train.steps", "train.learning_rate", "seed", "train.warmup_steps",
                                "train.log_every", "model.dropout"]))
    value = {"train.steps": "7", "train.learning_rate": "0.01", "seed": "3", "train.warmup_steps": "1",
             "train.log_every": "2", "model.dropout": "0.1"}[key]
  return _on_base(base, kind, [f"--config.{key}={value}"])


BAD_PY = [
    ("bad config file", b""),  # no get_config
    ("bad config file", b"def get_config(arg=None)\n  return 1\n"),  # syntax error
    ("bad config file", b"def get_config(arg=None):\n  return 3\n"),
    ("bad config file", b"def get_config(arg=None):\n  return {'seed': 0}\n"),
    ("bad config file", b"def get_config(arg=None):\n  raise KeyError('boom')\n"),
    ("bad config file", b"def get_config(arg=None):\n  return open('/nonexistent/x').read()\n"),
    ("bad config file", b"raise RuntimeError('top level')\n"),
    ("bad config file", b"import attnlab_no_such_module\n"),
    ("bad config file", b"x = 1 / 0\n"),
    ("non-UTF-8", b"# \xff\xfe\xfa\ndef get_config(arg=None):\n  return None\n"),
]


@st.composite
def config_file_cases(draw) -> Case:
  """A bad config file, a missing one, a bad `:arg`, or a base config with one key deleted."""
  choice = draw(st.sampled_from(["file", "missing file", "directory", "bad arg", "missing key"]))
  if choice == "file":
    kind, source = draw(st.sampled_from(BAD_PY))
    return Case(kind, "{dir}/config.py" + draw(st.sampled_from(["", ":x=1"])), (),
                (("config.py", source),))
  if choice == "missing file":
    return Case("missing file", "{dir}/" + draw(NAMES) + ".py")
  if choice == "directory":
    return Case("not a file", "{dir}/sub.py", (), (("sub.py", None),))
  if choice == "bad arg":
    base = draw(st.sampled_from(["mqar", "listops", "vision", "forecast", "icl_regression"]))
    arg = draw(st.one_of(st.text(string.ascii_letters + string.digits + "=,._- ", max_size=20),
                         st.sampled_from(["smoke", "smoke=maybe", "=1", ",,", "variant=", "size=huge",
                                          "smoke=True,zz=1", "seed=x", "horizon=-5", "model=zz"])))
    return Case("bad config argument", f"{CONFIGS}/{base}.py:{arg}")
  base = draw(st.sampled_from(sorted(BASES)))
  key = draw(st.sampled_from([k for k, _ in leaves(base)] + ["task.name", "train", "model", "mesh"]))
  config, overrides, files = BASES[base]
  path, arg = config.split(":", 1)
  subscript = "".join(f"[{p!r}]" for p in key.split("."))
  source = (f"import importlib.util\n"
            f"_spec = importlib.util.spec_from_file_location('fuzz_base_config', {path!r})\n"
            f"_base = importlib.util.module_from_spec(_spec)\n_spec.loader.exec_module(_base)\n\n"
            f"def get_config(arg=None):\n  c = _base.get_config(arg)\n  del c{subscript}\n  return c\n")
  return Case("missing key", "{dir}/config.py:" + arg, overrides, files + (("config.py", source.encode()),))


def _csv(header: str, rows) -> bytes:
  return (header + "\n" + "".join(r + "\n" for r in rows)).encode()


def _series_rows(n: int, cols: int = 2, cell=None) -> list[str]:
  """`n` hourly rows "date,x0..,OT"; `cell(i, j)` replaces the value of row i, column j."""
  out = []
  for i in range(n):
    vals = [str(cell(i, j)) if cell else f"{(i * (j + 3)) % 17 / 7:.3f}" for j in range(cols + 1)]
    out.append(f"2020-01-{1 + i // 24 % 28:02d} {i % 24:02d}:00:00," + ",".join(vals))
  return out


@st.composite
def forecast_csv_cases(draw) -> Case:
  """A forecasting CSV (configs/forecast.py:data=...) that is bad in one way, or valid."""
  kind = draw(st.sampled_from(["empty file", "too short", "missing column", "non-numeric cells",
                               "NaN cells", "malformed CSV", "non-UTF-8", "random bytes", "not a file",
                               "missing file", "valid"]))
  header = "date,x0,x1,OT"
  if kind == "empty file":
    data = draw(st.sampled_from([b"", b"\n", b"   \n\n"]))
  elif kind == "too short":  # smoke: seq_len 48 + horizon 24, each split needs 72 rows
    data = _csv(header, _series_rows(draw(st.integers(0, 200))))
  elif kind == "missing column":
    drop = draw(st.sampled_from(["date", "OT"]))
    cols = [c for c in header.split(",") if c != drop]
    rows = [",".join(r.split(",")[i] for i, c in enumerate(header.split(",")) if c != drop)
            for r in _series_rows(400)]
    data = _csv(",".join(cols), rows)
  elif kind == "non-numeric cells":
    bad = draw(st.text(string.ascii_letters, min_size=1, max_size=5))
    at = draw(st.integers(0, 399))
    data = _csv(header, _series_rows(400, cell=lambda i, j: bad if i == at and j == 1 else i % 5))
  elif kind == "NaN cells":
    at = draw(st.integers(0, 399))
    data = _csv(header, _series_rows(400, cell=lambda i, j: "" if i == at else i % 5))
  elif kind == "malformed CSV":
    data = draw(st.sampled_from([b'date,OT\n"2020-01-01,1\n', b"date,OT\n2020-01-01,1,2,3\nx\n",
                                 _csv("date;x0;OT", ["2020-01-01 00:00:00;1;2"] * 400)]))
  elif kind == "non-UTF-8":
    data = _csv(header, _series_rows(400)).replace(b"OT", b"O\xff\xfe", 1)
  elif kind == "random bytes":
    data = draw(st.binary(min_size=1, max_size=300))
  elif kind == "valid":
    data = _csv(header, _series_rows(400))
  if kind == "not a file":
    files = (("series.csv", None),)
  elif kind == "missing file":
    files = ()
  else:
    files = (("series.csv", data),)
  return Case(kind, f"{CONFIGS}/forecast.py:smoke=True,data={{dir}}/series.csv", (), files)


@st.composite
def text_file_cases(draw) -> Case:
  """A char_lm text file (config.task.path) or vocab file (task.vocab_file): bad, or valid."""
  vocab = draw(st.sampled_from(["byte", "char"]))
  kind = draw(st.sampled_from(["empty file", "non-UTF-8", "too short", "random bytes", "not a file",
                               "missing file", "bad vocab file", "valid"]))
  data, extra = VALID_TEXT, []
  if kind == "empty file":
    data = b""
  elif kind == "non-UTF-8":  # a valid byte stream for vocab=byte, bad for vocab=char
    data = VALID_TEXT[:2000] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\x80"])) + VALID_TEXT[2000:]
  elif kind == "too short":
    data = _text(draw(st.integers(1, 2500)), 1)
  elif kind == "random bytes":
    data = draw(st.binary(min_size=1, max_size=600))
  files = [("text.txt", data)]
  if kind == "not a file":
    files = [("text.txt", None)]
  elif kind == "missing file":
    files = []
  elif kind == "bad vocab file":
    vocab = "char"
    content = draw(st.sampled_from([b"", b"{", b"[1, 2]", b'{"x": 1}', b'{"chars": 5}', b'{"chars": "aa"}',
                                    b'{"chars": "ab"}', b"\xff\xfe", None]))
    files.append(("vocab.json", content))
    extra = ["--config.task.vocab_file={dir}/vocab.json"]
  return Case(kind, f"{CONFIGS}/char_lm.py:smoke=True,vocab={vocab}",
              ("--config.task.path={dir}/text.txt", *extra), tuple(files))


@st.composite
def labeled_csv_cases(draw) -> Case:
  """A text-classification CSV (configs/text_classification.py:train_path=...): bad, or valid."""
  kind = draw(st.sampled_from(["empty file", "too short", "missing column", "malformed CSV", "one class",
                               "non-UTF-8", "random bytes", "unknown name", "valid"]))
  files, arg = [], ""
  if kind == "empty file":
    data = draw(st.sampled_from([b"", b"\n\n", b"  "]))
  elif kind == "too short":  # a header and 0..1 rows
    data = _labeled_csv(draw(st.integers(0, 1)))
  elif kind == "missing column":
    data = _labeled_csv(60).replace(b"label,text", draw(st.sampled_from([b"lab,text", b"label,txt", b"a,b"])), 1)
  elif kind == "malformed CSV":
    data = draw(st.sampled_from([_labeled_csv(60) + b"1,x,extra\n", _labeled_csv(60) + b'0,"open\n',
                                 _labeled_csv(60) + b"1,\n"]))
  elif kind == "one class":
    data = _labeled_csv(60, classes=1)
  elif kind == "non-UTF-8":
    data = _labeled_csv(60) + b"1,caf\xe9\n"
  elif kind == "random bytes":
    data = draw(st.binary(min_size=1, max_size=300))
  elif kind == "unknown name":  # a test label the training file does not have
    data = VALID_LABELED
    files.append(("test.csv", _labeled_csv(10, classes=2).replace(b"\n1,", b"\n7,")))
    arg = ",test_path={dir}/test.csv"
  else:
    data = VALID_LABELED
  files.append(("train.csv", data))
  return Case(kind, f"{CONFIGS}/text_classification.py:smoke=True,train_path={{dir}}/train.csv{arg}",
              (), tuple(files))


def _png(size: tuple[int, int], mode: str, seed: int) -> bytes:
  """A PNG of `size` (W, H) in PIL `mode` with deterministic pixel values."""
  import numpy as np
  from PIL import Image
  shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
  pixels = (np.arange(np.prod(shape)).reshape(shape) * (seed + 7) % 256).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels, mode).save(buf, format="PNG")
  return buf.getvalue()


@st.composite
def image_folder_cases(draw) -> Case:
  """An image folder (configs/vision.py:dataset=folder,data_dir=...): bad, or valid."""
  kind = draw(st.sampled_from(["no images", "non-image files", "mixed sizes", "one class", "random bytes",
                               "missing file", "valid"]))
  classes = 1 if kind == "one class" else draw(st.integers(2, 3))
  per_class = 0 if kind == "no images" else 10
  image_size = draw(st.sampled_from([0, 8])) if kind == "mixed sizes" else 0
  mode = draw(st.sampled_from(["L", "RGB"]))
  files = []
  for c in range(classes):
    files.append((f"img/c{c}", None))
    for i in range(per_class):
      size = (8 + (i % 2) * 4, 8) if kind == "mixed sizes" else (8, 8)
      files.append((f"img/c{c}/{i}.png", _png(size, mode, c * 100 + i)))
  if kind == "no images":
    files.append(("img/c0/readme.txt", b"not an image"))
  elif kind == "non-image files":
    files.append(("img/c0/zz.png", draw(st.sampled_from([b"", b"hello", b"\x89PNG\r\n\x1a\n" + b"\0" * 8]))))
  elif kind == "random bytes":
    files.append(("img/c1/zz.jpg", draw(st.binary(min_size=1, max_size=200))))
  elif kind == "missing file":
    files = []
  return Case(kind, f"{CONFIGS}/vision.py:smoke=True,dataset=folder,data_dir={{dir}}/img,image_size={image_size}",
              (), tuple(files))


def cases() -> st.SearchStrategy[Case]:
  """Every kind of Case: overrides weighted up (they reach the most code), then files."""
  return st.one_of(override_cases(), override_cases(), override_cases(), config_file_cases(),
                   forecast_csv_cases(), text_file_cases(), labeled_csv_cases(), image_folder_cases())
