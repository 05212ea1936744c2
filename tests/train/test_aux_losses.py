"""Auxiliary losses that variants sow reach training: weighted, logged, and in the router's gradient."""

import jax
import numpy as np
import pytest
from flax import traverse_util

from attnlab.config_loading import load_config
from attnlab.train import trainer
from attnlab.train.state import init_state
from attnlab.train.step import make_train_step

MQAR = "configs/mqar.py:variant=moh,smoke=True"


def _one_step(weight: float):
  """Router params of MoH after one train step with aux weight `weight`, and the step's metrics."""
  config = load_config(MQAR, [f"--config.train.aux_loss_weights.load_balance={weight}",
                              "--config.train.warmup_steps=0"])
  run = trainer.setup(config)
  state = init_state(run.init_fn, run.shardings, run.rules)
  step = jax.jit(make_train_step(run.model, run.task.metrics, run.tx, run.schedule, 0, run.aux_weights))
  batch = next(run.task.train_iterator())
  new_state, metrics = step(state, batch)
  flat = traverse_util.flatten_dict(jax.device_get(new_state.params))
  routers = {k: np.asarray(v) for k, v in flat.items() if any("router" in p for p in k)}
  return routers, jax.device_get(metrics)


def test_moh_load_balance_loss_reaches_the_router():
  off, m_off = _one_step(0.0)
  on, m_on = _one_step(1.0)
  assert off and set(off) == set(on)
  assert float(m_on["aux/load_balance"]) > 0  # logged, summed over the layers
  np.testing.assert_allclose(m_on["aux/load_balance"], m_off["aux/load_balance"], rtol=1e-6)
  assert float(m_on["objective"]) > float(m_on["loss"])
  moved = [k for k in off if not np.allclose(off[k], on[k], atol=1e-7)]
  assert moved, "the router's update does not depend on the load-balance weight"


def test_a_sown_loss_without_a_weight_is_a_one_line_error():
  config = load_config(MQAR)
  del config.train.aux_loss_weights["load_balance"]
  with pytest.raises(ValueError, match=r"sows auxiliary losses \['load_balance'\]") as e:
    trainer.setup(config)
  assert "\n" not in str(e.value)
