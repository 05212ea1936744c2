"""ListOps generator: labels by an independent evaluator, length / depth / arity bounds, determinism."""

import collections

import numpy as np
import pytest

import attnlab.data.listops as lo

SMALL = dict(seq_len=256, max_depth=6, max_args=5, min_length=20, max_length=256)


def _evaluate(text):
  """Independent evaluator of a ListOps string: a stack of (op, args); also returns depth facts."""
  stack, value, max_nesting, arities = [], None, 0, []
  for tok in text.split():
    if tok.startswith("["):
      stack.append((tok, []))
      max_nesting = max(max_nesting, len(stack))
    elif tok == "]":
      op, args = stack.pop()
      arities.append(len(args))
      v = {"[MAX": max, "[MIN": min, "[MED": lambda a: int(np.median(a)),
           "[SM": lambda a: int(np.sum(a)) % 10}[op](args)
      if stack:
        stack[-1][1].append(v)
      else:
        value = v
    else:
      d = int(tok)
      if stack:
        stack[-1][1].append(d)
      else:
        value = d
  assert not stack, "unbalanced brackets"
  return value, max_nesting, arities


@pytest.mark.parametrize("kw", [SMALL, dict(seq_len=2000)])  # dict(): LRA's defaults
def test_label_is_the_value_and_bounds_hold(kw):
  n = 60 if len(kw) > 1 else 12
  spec = lo.ListOpsSpec(**{k: v for k, v in kw.items() if k != "seq_len"})
  for i in range(n):
    ex = lo.listops(5, i, **kw)
    x = ex["inputs"]
    assert x.shape == (kw["seq_len"],) and x.dtype == np.int32
    assert ex["targets"].shape == () and ex["targets"].dtype == np.int32
    assert ex["weights"].dtype == np.float32 and ex["weights"] == 1.0
    length = int(np.count_nonzero(x))
    assert np.all(x[:length] > 0) and np.all(x[length:] == 0)  # right-padded, no inner pads
    assert spec.min_length < length < spec.max_length
    value, nesting, arities = _evaluate(lo.decode(x))
    assert value == int(ex["targets"])
    assert nesting <= spec.max_depth - 1  # digits sit at depth <= max_depth
    assert arities and all(2 <= a <= spec.max_args for a in arities)


def test_operator_semantics():
  for text, value in [("[MED 3 4 ]", 3), ("[MED 9 0 1 8 ]", 4), ("[SM 9 8 7 ]", 4),
                      ("[MAX 2 [MIN 4 7 ] 0 ]", 4), ("[MED 1 5 6 ]", 5), ("[MIN 7 3 ]", 3)]:
    assert lo.decode(lo.encode(text)) == text
    assert _evaluate(text)[0] == value
  # The generator's own operator code is checked through its labels: every generated
  # target equals this test's independent evaluator (test above), never by calling it.


def test_encode_reads_lra_tsv_strings_and_rejects_unknown_tokens():
  ids = lo.encode("( ( ( [MAX 2 ) 9 ) ] )")
  assert lo.decode(ids) == "[MAX 2 9 ]"
  assert ids.tolist() == [lo.VOCAB.index("[MAX"), 3, 10, lo.END_ID]
  with pytest.raises(ValueError, match="unknown token"):
    lo.encode("[MAX 2 X ]")


def test_vocab_ids():
  assert lo.VOCAB[0] == lo.PAD and lo.VOCAB_SIZE == 16
  assert [lo.VOCAB.index(str(d)) for d in range(10)] == list(range(1, 11))
  assert lo.VOCAB[lo.END_ID] == "]"


def test_determinism_and_disjoint_splits():
  a = [lo.listops(1, i, **SMALL)["inputs"] for i in range(5)]
  b = [lo.listops(1, i, **SMALL)["inputs"] for i in reversed(range(5))][::-1]
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  other_seed = lo.listops(2, 0, **SMALL)["inputs"]
  assert not np.array_equal(a[0], other_seed)
  split_seeds = {s: lo.split_seed(1, s) for s in lo.SPLITS}
  assert len(set(split_seeds.values())) == 3
  firsts = {s: lo.listops(1, 0, split=s, **SMALL)["inputs"].tobytes() for s in lo.SPLITS}
  assert len(set(firsts.values())) == 3
  with pytest.raises(ValueError, match="split must be one of"):
    lo.listops(1, 0, split="dev", **SMALL)


def test_labels_cover_ten_classes_not_degenerate():
  counts = collections.Counter(int(lo.listops(3, i, **SMALL)["targets"]) for i in range(400))
  assert set(counts) == set(range(10))
  assert max(counts.values()) / 400 < 0.3  # no class dominates (LRA: 0 and 9 most frequent)


def test_operator_probability_is_lras():
  # With no lower bound a single digit is accepted: P(root is a digit) = 1 - 0.25.
  kw = dict(seq_len=64, max_depth=3, max_args=3, min_length=0, max_length=64)
  single = np.mean([np.count_nonzero(lo.listops(0, i, **kw)["inputs"]) == 1 for i in range(2000)])
  assert abs(single - (1 - lo.OPERATOR_P)) < 0.04


def test_truncation_when_seq_len_is_short():
  ex = lo.listops(0, 0, **{**SMALL, "seq_len": 16})
  assert ex["inputs"].shape == (16,) and np.all(ex["inputs"] > 0)


@pytest.mark.parametrize("kw,match", [
    (dict(max_depth=1), "max_depth must be >= 2"),
    (dict(max_args=1), "max_args must be >= 2"),
    (dict(min_length=10, max_length=11), "min_length \\+ 1 < max_length"),
    (dict(max_depth=2, max_args=3, min_length=10, max_length=50), "unreachable"),
    (dict(seq_len=0), "seq_len must be >= 1"),
])
def test_bad_arguments_one_line(kw, match):
  with pytest.raises(ValueError, match=match) as e:
    lo.listops(0, 0, **{**SMALL, **kw})
  assert "\n" not in str(e.value)


def test_max_possible_length():
  assert lo.max_possible_length(2, 3) == 5  # [OP d d d ]
  assert lo.max_possible_length(3, 2) == 2 + 2 * 4


def test_data_modules_are_pure_numpy():
  """Their own imports are stdlib, numpy and attnlab.data.seeding; importing them loads no flax.

  (jax itself arrives with grain, which `attnlab/data/__init__.py` imports.)
  """
  import ast
  import subprocess
  import sys
  from attnlab.data import text_classification
  for mod in (lo, text_classification):
    tree = ast.parse(open(mod.__file__, encoding="utf-8").read())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names <= {"__future__", "collections", "csv", "dataclasses", "io", "os", "numpy",
                     "attnlab.data.seeding"}, names
  code = ("import sys, attnlab.data.listops, attnlab.data.text_classification; "
          "assert 'flax' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True)
