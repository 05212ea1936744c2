"""char_lm task on a temp file (byte and char vocab) and on tinyshakespeare when present."""

import os

import numpy as np
import pytest

from attnlab.tasks import build_task

TEXT = "First Citizen: Before we proceed any further, hear me speak. ünïcödé! " * 30
SHAKESPEARE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data",
                           "tinyshakespeare.txt")


@pytest.fixture
def text_file(tmp_path):
  path = tmp_path / "text.txt"
  path.write_text(TEXT, encoding="utf-8")
  return str(path)


@pytest.mark.parametrize("vocab", ["byte", "char"])
def test_char_lm_data(text_file, vocab, make_config):
  task = build_task(make_config("char_lm", path=text_file, vocab=vocab, seq_len=16, batch_size=4,
                                eval_batches=100))
  task.validate()
  expected_vocab = 256 if vocab == "byte" else len(set(TEXT))
  assert task.vocab_size == expected_vocab and task.seq_len == 16
  it = task.train_iterator()
  batch = next(it)
  assert batch["inputs"].shape == (4, 16) and batch["inputs"].dtype == np.int32
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
  assert np.all(batch["weights"] == 1.0) and batch["inputs"].max() < expected_vocab
  state = it.get_state()
  nxt = next(it)
  again = task.train_iterator()
  again.set_state(state)
  np.testing.assert_array_equal(next(again)["inputs"], nxt["inputs"])
  evals = task.eval_batches()
  n_tokens = len(TEXT.encode()) if vocab == "byte" else len(TEXT)
  n_val = n_tokens - int(round(n_tokens * 0.9))
  assert len(evals) == ((n_val - 1) // 16) // 4  # capped at what the val split holds
  flat = np.concatenate([b["inputs"] for b in evals]).reshape(-1)
  if vocab == "char":
    decoded = task.char_vocab.decode(flat)
    assert decoded == TEXT[n_tokens - n_val:][:len(decoded)]  # contiguous val text, in order
  else:
    assert bytes(flat.astype(np.uint8)) == TEXT.encode()[n_tokens - n_val:][:len(flat)]


def test_missing_file_message(tmp_path, make_config):
  missing = str(tmp_path / "missing.txt")
  task = build_task(make_config("char_lm", path=missing))
  with pytest.raises(FileNotFoundError) as e:
    task.validate()
  assert str(e.value) == f"char_lm: text file not found: {missing}"


def test_bad_vocab_and_short_file(tmp_path, text_file, make_config):
  with pytest.raises(ValueError, match="vocab must be one of"):
    build_task(make_config("char_lm", path=text_file, vocab="word")).validate()
  with pytest.raises(ValueError, match="fewer than one batch"):
    build_task(make_config("char_lm", path=text_file, seq_len=512, batch_size=8)).validate()


def test_tinyshakespeare(make_config):
  if not os.path.isfile(SHAKESPEARE):
    print(f"skipping: {os.path.abspath(SHAKESPEARE)} not found")
    pytest.skip(f"{os.path.abspath(SHAKESPEARE)} not found")
  task = build_task(make_config("char_lm", path=SHAKESPEARE, vocab="char", seq_len=128,
                                batch_size=8, eval_batches=3))
  task.validate()
  assert task.vocab_size == 65  # the well-known tinyshakespeare character set
  assert len(task.eval_batches()) == 3
  assert next(task.train_iterator())["inputs"].shape == (8, 128)
