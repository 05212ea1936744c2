"""Text classification from `label,text` CSV files, as UTF-8 byte tokens.

File format (read with Python's `csv` module, so quoted fields may hold commas,
quotes "" and newlines):

- `header=True` (the default): the first row names the columns; the label and the
  text are the columns named `label_column` and `text_column` (default "label" and
  "text"); other columns are allowed and unused.
- `header=False`: every row is data and has exactly two fields, label then text.

The file must be UTF-8 (a leading byte-order mark is dropped). Every row needs a
non-empty text. Labels are strings; the label ids are the sorted distinct labels of
the training file (sorted as integers when every label is an integer, "2" < "10",
else as strings), and a val / test label not seen in training is an error, as is a
training file with fewer than two classes.

Tokens: the text's UTF-8 bytes + 1 (ids 1..256; 0 is padding; `VOCAB_SIZE = 257`),
truncated to `seq_len` bytes and right-padded with 0.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os

import numpy as np

VOCAB_SIZE = 257  # 0 = padding, byte b -> b + 1


@dataclasses.dataclass(frozen=True)
class LabeledTexts:
  """Rows of one file: `labels[i]` (a string) and `texts[i]` (its UTF-8 bytes)."""

  labels: tuple[str, ...]
  texts: tuple[bytes, ...]

  def __len__(self) -> int:
    """Number of rows."""
    return len(self.labels)


def read_labeled_csv(path: str, *, header: bool = True, label_column: str = "label",
                     text_column: str = "text") -> LabeledTexts:
  """Reads a `label,text` CSV (see the module docstring); one-line errors for bad files.

  Raises FileNotFoundError (missing file) or ValueError (non-UTF-8 bytes, an empty
  file, no data rows, a missing column, a row with the wrong number of fields, an
  empty text).
  """
  if not path:
    raise ValueError("text_classification: the CSV path is empty; set config.task.train_path")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"text_classification: CSV file not found: {path}")
  with open(path, "rb") as f:
    raw = f.read()
  try:
    content = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise ValueError(f"text_classification: {path} is not valid UTF-8 "
                     f"({e.reason} at byte {e.start})") from None
  if not content.strip():
    raise ValueError(f"text_classification: {path} is empty")
  try:
    rows = [r for r in csv.reader(io.StringIO(content, newline="")) if r]
  except csv.Error as e:
    raise ValueError(f"text_classification: {path} is not valid CSV ({e})") from None
  if header:
    names, rows, first_line = rows[0], rows[1:], 2
    missing = [c for c in (label_column, text_column) if c not in names]
    if missing:
      raise ValueError(f"text_classification: {path} has no column(s) {missing}; its header is "
                       f"{names} (set label_column / text_column, or header=False)")
    li, ti = names.index(label_column), names.index(text_column)
    width = len(names)
  else:
    first_line, li, ti, width = 1, 0, 1, 2
  if not rows:
    raise ValueError(f"text_classification: {path} has a header but no data rows")
  labels, texts = [], []
  for n, row in enumerate(rows, start=first_line):
    if len(row) != width:
      raise ValueError(f"text_classification: {path} row {n} has {len(row)} fields, expected "
                       f"{width}{'' if header else ' (label,text)'}; quote texts that hold commas")
    text = row[ti]
    if not text:
      raise ValueError(f"text_classification: {path} row {n} has an empty text")
    labels.append(row[li].strip())
    texts.append(text.encode("utf-8"))
  return LabeledTexts(labels=tuple(labels), texts=tuple(texts))


def label_names(labels) -> tuple[str, ...]:
  """Sorted distinct labels: as integers if every label is one, else as strings."""
  distinct = set(labels)
  try:
    return tuple(sorted(distinct, key=int))
  except ValueError:
    return tuple(sorted(distinct))


def label_ids(labels, names: tuple[str, ...], *, source: str = "") -> np.ndarray:
  """int32 [n]: the index in `names` of each label; an unknown label is a ValueError."""
  table = {name: i for i, name in enumerate(names)}
  try:
    return np.fromiter((table[l] for l in labels), dtype=np.int32, count=len(labels))
  except KeyError as e:
    raise ValueError(f"text_classification: label {e.args[0]!r}{' in ' + source if source else ''} "
                     f"is not a training label; training labels: {list(names)}") from None


def byte_tokens(text: bytes, seq_len: int) -> np.ndarray:
  """int32 [seq_len]: the first seq_len bytes of `text` plus 1, right-padded with 0."""
  ids = np.zeros(seq_len, dtype=np.int32)
  b = np.frombuffer(text[:seq_len], dtype=np.uint8)
  ids[:len(b)] = b.astype(np.int32) + 1
  return ids


def decode_bytes(ids) -> str:
  """The text of byte token ids (padding dropped; invalid UTF-8 replaced), inverse of `byte_tokens`."""
  return bytes(int(i) - 1 for i in ids if int(i) != 0).decode("utf-8", errors="replace")


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, val) row indices: a seeded permutation of range(n), the last val_fraction held out.

  Rows are shuffled before the cut because CSV files are often sorted by label.
  Both parts are sorted (file order) and non-empty.
  """
  if not 0.0 < val_fraction < 1.0:
    raise ValueError(f"text_classification: val_fraction must be in (0, 1), got {val_fraction}")
  num_val = int(round(n * val_fraction))
  if num_val < 1 or num_val >= n:
    raise ValueError(f"text_classification: val_fraction={val_fraction} of {n} rows leaves an "
                     f"empty train or val split")
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[:n - num_val]), np.sort(perm[n - num_val:])


@dataclasses.dataclass(frozen=True)
class ClassificationSplit:
  """One split, ready for `example`: texts (bytes) and label ids int32 [n]."""

  texts: tuple[bytes, ...]
  labels: np.ndarray

  def __len__(self) -> int:
    """Number of examples."""
    return len(self.texts)

  def example(self, index: int, seq_len: int) -> dict[str, np.ndarray]:
    """inputs int32 [seq_len] (byte tokens), targets int32 [], weights float32 [] (1.0)."""
    return {"inputs": byte_tokens(self.texts[index], seq_len),
            "targets": np.asarray(self.labels[index], dtype=np.int32),
            "weights": np.asarray(1.0, dtype=np.float32)}


def load_splits(*, train_path: str, val_path: str = "", test_path: str = "",
                val_fraction: float = 0.1, seed: int = 0, header: bool = True,
                label_column: str = "label", text_column: str = "text",
                ) -> tuple[dict[str, ClassificationSplit], tuple[str, ...]]:
  """Reads the CSV files into {"train", "val"[, "test"]} splits and the label names.

  val comes from `val_path` when given, else a seeded `val_fraction` of the train
  file's rows (`split_indices`); test only from `test_path`. Label ids come from the
  training rows (at least two classes).
  """
  kw = dict(header=header, label_column=label_column, text_column=text_column)
  train = read_labeled_csv(train_path, **kw)
  if val_path:
    val = read_labeled_csv(val_path, **kw)
  else:
    tr, va = split_indices(len(train), val_fraction, seed)
    val = LabeledTexts(tuple(train.labels[i] for i in va), tuple(train.texts[i] for i in va))
    train = LabeledTexts(tuple(train.labels[i] for i in tr), tuple(train.texts[i] for i in tr))
  names = label_names(train.labels)
  if len(names) < 2:
    raise ValueError(f"text_classification: {train_path} has a single class {names[0]!r} in its "
                     f"training rows; classification needs at least 2")
  sources = {"train": (train, train_path), "val": (val, val_path or train_path)}
  if test_path:
    sources["test"] = (read_labeled_csv(test_path, **kw), test_path)
  splits = {name: ClassificationSplit(rows.texts, label_ids(rows.labels, names, source=src))
            for name, (rows, src) in sources.items()}
  return splits, names
