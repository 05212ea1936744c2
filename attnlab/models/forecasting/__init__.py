"""Forecasting models (Time-Series-Library style), each registered in MODELS by name:
`vanilla`, `patchtst`, `itransformer`, `timexer`, `gateformer`.

Every model takes inputs {"series": float [B, L, C], "marks": float [B, L, F]} and
returns forecasts float32 [B, H, C] (TimeXer: [B, H, 1] when only the target is
forecast); the attention inside is any registered variant, by name (config.model.variant).
Builders take the task's model_kwargs {"num_features", "horizon", "num_targets"}.
"""

from attnlab.models.forecasting import gateformer as _gateformer  # noqa: F401
from attnlab.models.forecasting import itransformer as _itransformer  # noqa: F401
from attnlab.models.forecasting import patchtst as _patchtst  # noqa: F401
from attnlab.models.forecasting import timexer as _timexer  # noqa: F401
from attnlab.models.forecasting import vanilla as _vanilla  # noqa: F401

FORECAST_MODELS = ("vanilla", "patchtst", "itransformer", "timexer", "gateformer")
