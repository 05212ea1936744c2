"""Time-series forecasting (Time-Series-Library's protocol) with any attention variant inside.

Run (the embedded generated series, about a minute on a laptop CPU):
  attnlab train --config configs/forecast.py:model=itransformer,horizon=96 --workdir runs/fc_it
ETTh1 (Informer / iTransformer protocol: L = 96, features M, 12/4/4-month splits):
  attnlab train --config configs/forecast.py:model=itransformer,data=../shared/data/ETTh1.csv,horizon=96 \
      --workdir runs/etth1_it_96
Other models and variants (vanilla, patchtst, itransformer, timexer, gateformer; any
registered attention variant):
  attnlab train --config configs/forecast.py:model=patchtst,variant=linear --workdir runs/fc_pt_lin
  attnlab train --config configs/forecast.py:model=vanilla,variant=performer --workdir runs/fc_va_perf
Smoke (seconds):
  attnlab train --config configs/forecast.py:model=timexer,smoke=True --workdir /tmp/fc_smoke
The generic trainer's fixed-step protocol instead of early stopping:
  attnlab train --config configs/forecast.py:protocol=steps --workdir runs/fc_steps
Single leaves: --config.task.seq_len=192 --config.train.epochs=20 --config.model.d_model=128

The default protocol (config.train.protocol="early_stopping", `attnlab.train.early_stopping`)
is iTransformer's ETTh1 recipe: Adam lr 1e-4, batch 32, MSE loss, 10 epochs, learning
rate halved each epoch after the second, early stopping on validation MSE with patience
3, the best checkpoint restored for the test; MSE / MAE over every test window on the
scaled data. It writes results.json, metrics.jsonl and forecast.png to the workdir.
Per-model shapes (`MODEL_SHAPES`, then `HORIZON_SHAPES` for (model, H)): itransformer 2
layers, d_model = d_ff = 256 for H <= 192 and 512 beyond, 8 heads, dropout 0.1, GELU
(iTransformer's scripts/ETTh1.sh). patchtst and timexer follow Time-Series-Library's
scripts/long_term_forecast/ETT_script/{PatchTST,TimeXer}_ETTh1.sh where a 2-core CPU allows:
- patchtst: 1 layer, heads 2 / 8 / 8 / 16 for H = 96 / 192 / 336 / 720, d_ff = 4 d_model as
  TSLib's, but d_model 256 / d_ff 1024 instead of TSLib's default 512 / 2048 (~14 GFLOP per
  train step instead of ~50; 0.4 s a step, ~2 min an epoch on this CPU unloaded);
- timexer: H = 96 1 layer d 256 d_ff 2048, H = 192 2 layers d 128 d_ff 2048, H = 720 1 layer
  d 256 d_ff 1024 (TSLib's); H = 336 1 layer d 256 d_ff 1024 instead of TSLib's d 512 (CPU);
  batch 32 throughout instead of TSLib's 4 (H <= 192) / 16 (H >= 336).
The training recipe is iTransformer's for every model (TSLib's run.py defaults agree: Adam
1e-4, 10 epochs, patience 3, lradj type1), and dropout 0.1 (TSLib's default).
"""

from attnlab import config_lib

ARGS = dict(model="itransformer", data="", horizon=96, variant="mha", smoke=False, features="M",
            seq_len=96, protocol="early_stopping", seed=0)

# model -> (num_layers, d_model, d_ff, num_heads, dropout); itransformer's d grows for H > 192.
MODEL_SHAPES = {
    "itransformer": (2, 256, 256, 8, 0.1),
    "vanilla": (2, 256, 256, 8, 0.1),
    "patchtst": (1, 256, 1024, 8, 0.1),
    "timexer": (1, 256, 1024, 8, 0.1),
    "gateformer": (2, 256, 256, 8, 0.1),
}
WIDE = {"itransformer": 512, "vanilla": 512, "gateformer": 512}  # d_model = d_ff for H > 192
# (model, horizon) -> the MODEL_SHAPES tuple for that horizon (TSLib's ETTh1 scripts; see the doc).
HORIZON_SHAPES = {
    ("patchtst", 96): (1, 256, 1024, 2, 0.1),
    ("patchtst", 720): (1, 256, 1024, 16, 0.1),
    ("timexer", 96): (1, 256, 2048, 8, 0.1),
    ("timexer", 192): (2, 128, 2048, 8, 0.1),
}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, ARGS)
  config_lib.check_choice(a, "model", MODEL_SHAPES)
  config_lib.check_choice(a, "protocol", ("early_stopping", "steps"))
  c = config_lib.base_config()
  c.seed = a["seed"]
  c.task.name = "forecast"
  c.task.model = a["model"]
  c.task.data = a["data"]
  c.task.features = a["features"]
  c.task.seq_len = a["seq_len"]
  c.task.horizon = a["horizon"]
  c.task.split = "test"
  layers, d, d_ff, heads, dropout = HORIZON_SHAPES.get((a["model"], a["horizon"]),
                                                      MODEL_SHAPES[a["model"]])
  if a["horizon"] > 192 and a["model"] in WIDE:
    d = d_ff = WIDE[a["model"]]
  m = c.model
  m.variant = a["variant"]
  m.causal = False
  m.num_layers, m.d_model, m.mlp_dim, m.num_heads, m.dropout = layers, d, d_ff, heads, dropout
  m.mlp = "gelu"
  m.norm = "post"
  m.normalize = True
  t = c.train
  t.protocol = a["protocol"]
  t.batch_size = 32
  t.learning_rate = 1e-4
  t.epochs = 10
  t.patience = 3
  t.lr_schedule = "halve"
  t.weight_decay = 0.0
  t.grad_clip = 0.0
  t.warmup_steps = 0
  t.steps = 2000  # the generic trainer only (protocol=steps)
  t.eval_every = 500
  t.checkpoint_every = 500
  t.log_every = 100
  if a["smoke"]:
    config_lib.apply_smoke(c)
    m.mlp_dim = 32
    c.task.seq_len, c.task.horizon, c.task.generated_rows = 48, 24, 600
    t.epochs, t.patience, t.learning_rate = 2, 1, 1e-3
  config_lib.apply_encoder_variant(c, _tokens(a["model"], c.task.seq_len))
  config_lib.apply_variant_needs(c)
  return c


def _tokens(model: str, seq_len: int) -> int:
  """Tokens the encoder sees (for the length-dependent variant leaves): time steps for vanilla,
  patches for the patch models, about a dozen variate tokens for the inverted ones."""
  if model == "vanilla":
    return seq_len
  if model in ("patchtst", "timexer", "gateformer"):
    return max(seq_len // 8, 8)
  return 16
