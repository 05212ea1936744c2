"""In-context regression prompts: layout, determinism, the least-squares baseline, no target leak."""

import numpy as np
import pytest

from attnlab.data import icl_regression as icl

KW = dict(dim=4, slots=12, min_examples=2, max_examples=10)


def test_prompt_layout_and_shapes():
  for i in range(20):
    ex = icl.prompt(7, i, **KW)
    tokens, valid, n = ex["inputs"]["tokens"], ex["inputs"]["valid"], int(ex["num_examples"])
    assert tokens.shape == (13, 5) and tokens.dtype == np.float32 and valid.shape == (13,)
    assert 2 <= n <= 10 and ex["targets"].shape == () and ex["weights"] == 1.0
    assert valid[:n].all() and not valid[n:12].any() and valid[12]
    assert not tokens[n:12].any(), "padding tokens are zeros"


def test_prompt_is_deterministic_in_seed_and_index():
  a, b = icl.prompt(3, 5, **KW), icl.prompt(3, 5, **KW)
  np.testing.assert_array_equal(a["inputs"]["tokens"], b["inputs"]["tokens"])
  assert a["targets"] == b["targets"]
  assert not np.array_equal(a["inputs"]["tokens"], icl.prompt(4, 5, **KW)["inputs"]["tokens"])
  assert not np.array_equal(a["inputs"]["tokens"], icl.prompt(3, 6, **KW)["inputs"]["tokens"])


def test_least_squares_recovers_w_and_predicts_the_query():
  rng = np.random.default_rng(0)
  w = rng.standard_normal(4)
  x = rng.standard_normal((6, 4))
  tokens = np.zeros((1, 13, 5))
  tokens[0, :6, :4], tokens[0, :6, 4], tokens[0, 12, :4] = x, x @ w, rng.standard_normal(4)
  valid = np.zeros((1, 13), bool)
  valid[0, :6] = valid[0, 12] = True
  np.testing.assert_allclose(icl.ridge_weights(tokens, valid)[0], w, atol=1e-4)
  # On generated noise-free prompts with n >= d, least squares predicts every query exactly.
  exs = [icl.prompt(1, i, dim=4, slots=12, min_examples=4, max_examples=12) for i in range(16)]
  tok = np.stack([e["inputs"]["tokens"] for e in exs])
  val = np.stack([e["inputs"]["valid"] for e in exs])
  np.testing.assert_allclose(icl.ridge_prediction(tok, val), [e["targets"] for e in exs], atol=1e-4)
  assert np.abs(icl.ridge_prediction(tok, val, ridge=10.0) - [e["targets"] for e in exs]).max() > 1e-2


def _leak_score(tokens, targets):
  """Normalised error of the best 'read it off the inputs' predictor: the input entry
  closest to each target. About 0 when the target is visible in the inputs."""
  gaps = np.abs(tokens.reshape(len(targets), -1) - targets[:, None]).min(axis=1)
  return float(np.mean(gaps ** 2) / np.mean(targets ** 2))


def test_the_query_target_is_not_in_the_inputs_and_a_leaking_canary_is_caught():
  exs = [icl.prompt(2, i, **KW) for i in range(64)]
  tokens = np.stack([e["inputs"]["tokens"] for e in exs])
  targets = np.array([e["targets"] for e in exs])
  assert (tokens[:, -1, -1] == 0).all(), "the query's y slot is zeroed"
  assert _leak_score(tokens, targets) > 1e-4
  canary = tokens.copy()
  canary[:, -1, -1] = targets  # a generator that forgets to zero the query's y
  assert _leak_score(canary, targets) < 1e-10


@pytest.mark.parametrize("kw,message", [
    (dict(dim=0, slots=4, min_examples=1, max_examples=2), "dim"),
    (dict(dim=2, slots=4, min_examples=3, max_examples=2), "min_examples"),
    (dict(dim=2, slots=4, min_examples=1, max_examples=5), "slots"),
    (dict(dim=2, slots=4, min_examples=1, max_examples=2, noise=-1.0), "noise"),
])
def test_bad_prompt_arguments_are_one_line_errors(kw, message):
  with pytest.raises(ValueError, match=message):
    icl.check_prompt_args(**kw)
