"""listops and text_classification tasks: spec, batches, eval coverage, metrics, config errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.data import listops as lo
from attnlab.tasks import build_task

SMALL = dict(seq_len=64, max_depth=4, max_args=4, min_length=10, max_length=64,
             num_train_examples=0, num_val_examples=10, num_test_examples=7)


def _task(make_config, batch_size=4, **kw):
  task = build_task(make_config("listops", batch_size=batch_size, **{**SMALL, **kw}))
  task.validate()
  return task


def test_spec_model_and_kwargs(make_config):
  task = _task(make_config)
  assert task.model == "classifier"
  assert task.model_kwargs() == {"vocab_size": 16, "num_classes": 10}
  spec = task.input_spec()
  assert spec["inputs"].shape == (4, 64) and spec["inputs"].dtype == jnp.int32
  assert spec["targets"].shape == (4,) and spec["targets"].dtype == jnp.int32
  assert spec["weights"].shape == (4,) and spec["weights"].dtype == jnp.float32


def test_train_batches_match_spec_and_restore(make_config):
  task = _task(make_config)
  it = task.train_iterator(shard_index=0, shard_count=1)
  first = next(it)
  assert first["inputs"].shape == (4, 64) and first["inputs"].dtype == np.int32
  assert first["targets"].shape == (4,) and first["weights"].shape == (4,)
  assert np.all(first["weights"] == 1.0)
  state = it.get_state()
  second = next(it)
  it2 = task.train_iterator(shard_index=0, shard_count=1)
  it2.set_state(state)
  np.testing.assert_array_equal(next(it2)["inputs"], second["inputs"])


@pytest.mark.parametrize("split,n", [("val", 10), ("test", 7)])
def test_eval_covers_every_example_once(make_config, split, n):
  task = _task(make_config, split=split)
  batches = task.eval_batches(shard_index=0, shard_count=1)
  assert len(batches) == -(-n // 4)
  weights = np.concatenate([b["weights"] for b in batches])
  assert weights.sum() == n and np.all(weights[:n] == 1) and np.all(weights[n:] == 0)
  inputs = np.concatenate([b["inputs"] for b in batches])[:n]
  expected = [lo.listops(0, i, split=split, **{k: v for k, v in SMALL.items() if not k.startswith("num")})
              for i in range(n)]
  np.testing.assert_array_equal(inputs, np.stack([e["inputs"] for e in expected]))
  assert sum(float(task.example_count(b)) for b in batches) == n
  # Padding rows are copies of real examples (never an all-pad row a variant would fully mask).
  assert np.all(np.concatenate([b["inputs"] for b in batches])[:, 0] != 0)


def test_eval_shards_partition_the_global_batches(make_config):
  task = _task(make_config)
  full = task.eval_batches(shard_index=0, shard_count=1)
  halves = [task.eval_batches(shard_index=s, shard_count=2) for s in range(2)]
  for j, b in enumerate(full):
    np.testing.assert_array_equal(b["inputs"], np.concatenate([h[j]["inputs"] for h in halves]))
    np.testing.assert_array_equal(b["weights"], np.concatenate([h[j]["weights"] for h in halves]))


def test_val_test_train_differ_and_data_seed_fixes_them(make_config):
  val = _task(make_config).eval_batches(0, 1)[0]["inputs"]
  test = _task(make_config, split="test").eval_batches(0, 1)[0]["inputs"]
  assert not np.array_equal(val, test)
  reseeded = build_task(make_config("listops", batch_size=4, **SMALL))
  reseeded.config.seed = 7  # the model seed does not change the dataset
  np.testing.assert_array_equal(reseeded.eval_batches(0, 1)[0]["inputs"], val)
  other = _task(make_config, data_seed=1).eval_batches(0, 1)[0]["inputs"]
  assert not np.array_equal(other, val)


def test_metrics_ignore_weight_zero_rows(make_config):
  task = _task(make_config)
  logits = jnp.log(jnp.array([[0.5, 0.5] + [0.0] * 8, [0.1, 0.9] + [0.0] * 8,
                              [1.0] + [0.0] * 9, [0.0] * 9 + [1.0]]) + 1e-30)
  batch = {"targets": jnp.array([0, 1, 5, 9], jnp.int32),
           "weights": jnp.array([1.0, 1.0, 0.0, 1.0], jnp.float32)}
  m = task.metrics(logits, batch)
  loss_sum, loss_count = m["loss"]
  acc_sum, acc_count = m["accuracy"]
  assert float(loss_count) == 3 and float(acc_count) == 3
  np.testing.assert_allclose(float(loss_sum), -np.log(0.5) - np.log(0.9), rtol=1e-5)
  assert float(acc_sum) == 3  # argmax of row 0 ties -> class 0; the weight-0 row is wrong but ignored


@pytest.mark.parametrize("kw,match", [
    (dict(seq_len=32), "seq_len=32 would cut expressions"),
    (dict(split="train"), "split must be one of"),
    (dict(max_depth=1), "max_depth must be >= 2"),
    (dict(num_val_examples=0), "num_val_examples must be >= 1"),
    (dict(num_train_examples=2), "smaller than batch_size"),
])
def test_bad_config_one_line(make_config, kw, match):
  task = build_task(make_config("listops", batch_size=4, **{**SMALL, **kw}))
  with pytest.raises(ValueError, match=match) as e:
    task.validate()
  assert "\n" not in str(e.value)


def test_task_eval_batches_is_refused(make_config):
  cfg = make_config("listops", batch_size=4, **SMALL)
  cfg.task.eval_batches = 2
  with pytest.raises(ValueError, match="eval covers the whole val split"):
    build_task(cfg).validate()


def test_unknown_task_key(make_config):
  cfg = make_config("listops", batch_size=4, **SMALL)
  cfg.task.depth = 3
  with pytest.raises(ValueError, match="unknown config.task keys \\['depth'\\]"):
    build_task(cfg).validate()


# ---- text_classification ----------------------------------------------------------------------

def _csv(tmp_path, name, rows, header="label,text"):
  p = tmp_path / name
  p.write_text(header + "\n" + "".join(f"{l},{t}\n" for l, t in rows), encoding="utf-8")
  return str(p)


def test_text_classification_task(tmp_path, make_config):
  train = _csv(tmp_path, "train.csv", [("pos" if i % 3 else "neg", f"text number {i}") for i in range(30)])
  test = _csv(tmp_path, "test.csv", [("neg", "a"), ("pos", "bé"), ("neg", "c")])
  cfg = make_config("text_classification", batch_size=4, train_path=train, test_path=test,
                    seq_len=16, val_fraction=0.2)
  task = build_task(cfg)
  task.validate()
  assert task.model == "classifier" and task.label_names == ("neg", "pos")
  assert task.model_kwargs() == {"vocab_size": 257, "num_classes": 2}
  spec = task.input_spec()
  assert spec["inputs"].shape == (4, 16) and spec["targets"].shape == (4,)
  b = next(task.train_iterator(0, 1))
  assert b["inputs"].shape == (4, 16) and b["inputs"].dtype == np.int32 and b["targets"].dtype == np.int32
  val = task.eval_batches(0, 1)
  assert len(val) == 2 and sum(float(x["weights"].sum()) for x in val) == 6
  cfg.task.split = "test"
  test_task = build_task(cfg)
  test_task.validate()
  batches = test_task.eval_batches(0, 1)
  assert len(batches) == 1 and batches[0]["weights"].tolist() == [1, 1, 1, 0]
  assert batches[0]["targets"][:3].tolist() == [0, 1, 0]
  assert batches[0]["inputs"][1, :3].tolist() == [ord("b") + 1, 0xC3 + 1, 0xA9 + 1]


def test_text_classification_errors(tmp_path, make_config):
  train = _csv(tmp_path, "t.csv", [("a", "x"), ("b", "y")])
  cfg = make_config("text_classification", batch_size=4, train_path=train, split="test")
  with pytest.raises(ValueError, match='split="test" needs config.task.test_path'):
    build_task(cfg).validate()
  cfg = make_config("text_classification", batch_size=4, train_path=train, val_path=train)
  with pytest.raises(ValueError, match="the train split has 2 rows, fewer than batch_size=4"):
    build_task(cfg).validate()
  cfg = make_config("text_classification", batch_size=1, train_path=str(tmp_path / "nope.csv"))
  with pytest.raises(FileNotFoundError, match="CSV file not found"):
    build_task(cfg).validate()


# ---- configs and the trainer ------------------------------------------------------------------

LRA_VARIANTS = ("mha", "linformer", "nystromformer", "performer", "bigbird", "longformer", "linear",
                "lsh")


def _config(name, arg):
  import os
  from attnlab.config_loading import load_config
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return load_config(os.path.join(root, "configs", name) + ":" + arg)


@pytest.mark.parametrize("variant", LRA_VARIANTS)
def test_listops_config_builds_for_every_lra_variant(variant):
  from attnlab.models import build_task_model
  for arg in (f"variant={variant}", f"variant={variant},smoke=True", f"variant={variant},size=lra"):
    c = _config("listops.py", arg)
    assert c.model.causal is False and c.model.pooling == "mean" and c.model.variant == variant
    task = build_task(c)
    task.validate()
    build_task_model(c.model, task)  # the variant accepts its attn leaves (no parameters made)
  assert c.task.max_length == 2000 and c.task.min_length == 500  # size=lra keeps LRA's lengths


def test_listops_and_text_classification_train_and_evaluate(tmp_path):
  from attnlab.train import evaluate, train
  c = _config("listops.py", "smoke=True")
  result = train(c, str(tmp_path / "lo"))
  assert result["step"] == 6 and result["eval/examples"] == 12
  assert 0.0 <= result["eval/accuracy"] <= 1.0 and np.isfinite(result["eval/loss"])
  c.task.split = "test"
  test = evaluate(c, str(tmp_path / "lo"))
  assert test["eval/examples"] == 12 and test["eval/loss"] != result["eval/loss"]
  csv = tmp_path / "tc.csv"
  csv.write_text("label,text\n" + "".join(f"{i % 3},row {i} {'x' * i}\n" for i in range(40)))
  c = _config("text_classification.py", f"train_path={csv},smoke=True")
  result = train(c, str(tmp_path / "tc"))
  assert result["eval/examples"] == 4 and np.isfinite(result["eval/loss"])
