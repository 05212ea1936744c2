"""Synthetic tasks end to end: shapes, train/eval streams, iterator restore."""

import numpy as np
import pytest

from attnlab.tasks import build_task

SMALL = {
    "mqar": dict(vocab_size=64, seq_len=32, num_kv_pairs=4),
    "copy": dict(vocab_size=16, seq_len=32),
    "selective_copy": dict(vocab_size=16, seq_len=40, num_tokens=8),
    "induction": dict(vocab_size=16, seq_len=32),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_task_data(name, make_config):
  task = build_task(make_config(name, **SMALL[name]))
  task.validate()
  t = task.seq_len
  it = task.train_iterator()
  batch = next(it)
  assert batch["inputs"].shape == batch["targets"].shape == batch["weights"].shape == (4, t)
  assert batch["inputs"].dtype == np.int32 and batch["weights"].dtype == np.float32
  assert batch["inputs"].max() < task.vocab_size and batch["targets"].max() < task.vocab_size
  assert batch["weights"].sum() > 0
  state = it.get_state()
  following = [next(it) for _ in range(3)]
  again = task.train_iterator()
  again.set_state(state)
  for a, b in zip(following, [next(again) for _ in range(3)]):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
  evals = task.eval_batches()
  assert len(evals) == 2 and evals[0]["inputs"].shape == (4, t)
  np.testing.assert_array_equal(evals[1]["targets"], task.eval_batches()[1]["targets"])
  assert not np.array_equal(evals[0]["inputs"], batch["inputs"])  # eval stream differs from train


def test_seed_changes_data(make_config):
  a = build_task(make_config("mqar", **SMALL["mqar"])).eval_batches()[0]["inputs"]
  config = make_config("mqar", **SMALL["mqar"])
  config.seed = 1
  b = build_task(config).eval_batches()[0]["inputs"]
  assert not np.array_equal(a, b)


def test_mqar_head_at_queries_gives_the_same_metrics_at_a_fraction_of_the_head(make_config):
  """The vocabulary head at the P query positions only (inputs["head_positions"]) scores the
  same loss and accuracy as the full [B, T, V] head with weights; the canary: positions
  shifted by one (the head at the wrong tokens) give a different loss."""
  import jax
  import ml_collections
  from attnlab.models import build_task_model

  full = build_task(make_config("mqar", **SMALL["mqar"]))
  cut = build_task(make_config("mqar", head_at_queries=True, **SMALL["mqar"]))
  b_full, b_cut = full.eval_batches()[0], cut.eval_batches()[0]
  p = SMALL["mqar"]["num_kv_pairs"]
  assert b_cut["inputs"]["head_positions"].shape == b_cut["targets"].shape == (4, p)
  assert jax.tree.map(lambda s: s.shape, cut.input_spec())["targets"] == (4, p)
  np.testing.assert_array_equal(b_cut["inputs"]["tokens"], b_full["inputs"])
  model = build_task_model(ml_collections.ConfigDict(dict(
      variant="mha", num_layers=1, d_model=32, num_heads=2, mlp="none")), full)
  variables = model.init(jax.random.PRNGKey(0), b_full["inputs"])

  def metrics(task, batch, inputs=None):
    out = model.apply(variables, batch["inputs"] if inputs is None else inputs)
    return {k: float(v[0] / v[1]) for k, v in task.metrics(out, batch).items()}

  want, got = metrics(full, b_full), metrics(cut, b_cut)
  assert got["loss"] == pytest.approx(want["loss"], rel=1e-5) and got["accuracy"] == want["accuracy"]
  shifted = dict(b_cut["inputs"], head_positions=b_cut["inputs"]["head_positions"] - 1)
  assert abs(metrics(cut, b_cut, shifted)["loss"] - want["loss"]) > 1e-3
