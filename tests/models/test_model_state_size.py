"""A model's decode state (`attnlab.models.state_size`) and the accuracy-against-state plot
(scripts/recall_vs_state.py) on a fake reproduction workdir."""

import json
import os

import pandas as pd

from attnlab.attention import registry
from attnlab.models.state_size import model_state_floats
from configs import mqar
from tests.train import subproc


def test_a_hybrid_sums_its_layers_and_only_the_kv_cache_grows_with_t():
  c = mqar.get_config("variant=gla,mha,d_model=64")  # 2 layers, short_conv 0
  gla = registry.state_size("gla", 64, num_heads=c.model.num_heads).at(0)
  mha = registry.state_size("mha", 64, num_heads=c.model.num_heads)
  assert model_state_floats(c.model, 100) == gla + mha.at(100)
  assert model_state_floats(c.model, 200) - model_state_floats(c.model, 100) == 100 * mha.per_token > 0
  c.model.short_conv = 4
  assert model_state_floats(c.model, 100) == gla + mha.at(100) + 2 * 3 * 64  # (k - 1) d_model per layer


def test_recall_vs_state_picks_each_cells_best_lr_and_plots(tmp_path):
  script = subproc.load_script("recall_vs_state")
  rows = []
  for variant in ("mha", "gla"):
    for d in (64, 128):
      for lr in (1e-3, 1e-2):
        name = f"{variant}_{d}_{lr}"
        os.makedirs(tmp_path / name)
        config = mqar.get_config(f"size=zoology,variant={variant},d_model={d},lr={lr},seq_len=64")
        (tmp_path / name / "config.json").write_text(json.dumps(config.to_dict()))
        acc = (0.99 if variant == "mha" else d / 256) * (1.0 if lr == 1e-2 else 0.5)
        rows.append({"run": name, "status": "done", "eval/accuracy": acc})
  pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
  assert script.main([str(tmp_path)]) == 0
  table = pd.read_csv(tmp_path / "recall_vs_state.csv")
  assert len(table) == 4 and (table.lr == 1e-2).all()  # the better lr everywhere
  gla = table[table.variant == "gla"].sort_values("d_model")
  assert list(gla.value) == [0.25, 0.5] and gla.state.is_monotonic_increasing
  assert os.path.getsize(tmp_path / "recall_vs_state.png") > 1000
  assert script.main([str(tmp_path / "nothing")]) == 2
