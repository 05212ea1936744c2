"""grain pipelines: infinite training iterator, exact restore (get/set_state and orbax), eval batches."""

import functools
import json

import grain
import grain.checkpoint  # noqa: F401  (registers grain's orbax handler, as attnlab.train.checkpoint does)
import numpy as np
import orbax.checkpoint as ocp
import pytest

from attnlab.data import pipeline
from attnlab.data.associative_recall import mqar

EXAMPLE = functools.partial(mqar, 5, vocab_size=64, seq_len=32, num_kv_pairs=4)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def _iterator(**kw):
  kw = {"batch_size": 4, "seed": 0, "shard_index": 0, "shard_count": 1, "num_threads": 2, **kw}
  return pipeline.train_iterator(EXAMPLE, **kw)


def test_batches_shapes_and_order():
  batch = next(_iterator())
  assert batch["inputs"].shape == (4, 32) and batch["inputs"].dtype == np.int32
  assert batch["weights"].dtype == np.float32
  np.testing.assert_array_equal(batch["inputs"][2], EXAMPLE(2)["inputs"])


def test_get_set_state_reproduces_following_batches():
  for num_examples in (None, 12):  # infinite stream; finite pool reshuffled per epoch
    it = _iterator(num_examples=num_examples)
    _take(it, 5)
    state = it.get_state()
    expected = _take(it, 7)  # crosses epochs of the 12-example pool
    fresh = _iterator(num_examples=num_examples)
    fresh.set_state(state)
    _assert_same(_take(fresh, 7), expected)
    json_state = json.dumps(it.get_state())  # the state is plain JSON (what the orbax handler writes)
    after = _take(it, 2)
    again = _iterator(num_examples=num_examples)
    again.set_state(json.loads(json_state))
    _assert_same(_take(again, 2), after)


def test_finite_pool_reshuffles_each_epoch():
  it = _iterator(num_examples=8, batch_size=8)
  e1, e2 = next(it)["inputs"], next(it)["inputs"]
  rows = lambda a: sorted(map(tuple, a.tolist()))
  assert rows(e1) == rows(e2) and not np.array_equal(e1, e2)


@pytest.mark.parametrize("num_examples", [None, 16])
def test_shards_are_the_one_host_batch_split_in_row_blocks(num_examples):
  one = _iterator(num_examples=num_examples)
  hosts = [_iterator(num_examples=num_examples, shard_index=s, shard_count=2) for s in range(2)]
  for _ in range(5):  # past the end of the 16-example pool's first epoch
    a, b = (next(it)["inputs"] for it in hosts)
    assert a.shape == (2, 32)
    np.testing.assert_array_equal(np.concatenate([a, b]), next(one)["inputs"])


def test_eval_batches_deterministic_and_sharded():
  full = pipeline.eval_batches(EXAMPLE, batch_size=4, num_batches=3, shard_index=0, shard_count=1)
  _assert_same(full, pipeline.eval_batches(EXAMPLE, batch_size=4, num_batches=3,
                                           shard_index=0, shard_count=1))
  assert len(full) == 3 and full[0]["inputs"].shape == (4, 32)
  np.testing.assert_array_equal(full[2]["inputs"][1], EXAMPLE(9)["inputs"])
  halves = [pipeline.eval_batches(EXAMPLE, batch_size=4, num_batches=3, shard_index=s, shard_count=2)
            for s in range(2)]
  for j in range(3):
    np.testing.assert_array_equal(
        np.concatenate([halves[0][j]["inputs"], halves[1][j]["inputs"]]), full[j]["inputs"])


def test_orbax_checkpoint_manager_roundtrip(tmp_path):
  it = _iterator()
  _take(it, 3)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.save(3, args=ocp.args.Composite(**{
        "state": ocp.args.StandardSave({"w": np.arange(3.0)}),
        "data": grain.checkpoint.CheckpointSave(item=it)}))
    mngr.wait_until_finished()
  expected = _take(it, 4)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    assert mngr.latest_step() == 3
    fresh = _iterator()
    restored = mngr.restore(3, args=ocp.args.Composite(**{
        "state": ocp.args.StandardRestore({"w": np.zeros(3)}),
        "data": grain.checkpoint.CheckpointRestore(item=fresh)}))
  np.testing.assert_array_equal(restored["state"]["w"], np.arange(3.0))
  assert (tmp_path / "ckpt" / "3" / "data" / "process_0-of-1.json").exists()
  _assert_same(_take(restored["data"], 4), expected)
