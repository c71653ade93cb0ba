"""Training runs: a run URI holding config, data range, factor set, feature service, models, predictions, metrics
and provenance; ``l2vol train|evaluate|predict`` call into this package. It is the layer that joins the feature
store (``l2vol.features``) with the models and the evaluation, which never import it.

* :func:`train_run` — walk-forward folds over a Feast training set, every model fit per fold (HAR benchmark
  always, its variant chosen on validation QLIKE), test-fold forecasts and provenance written to the run;
* :func:`evaluate_run` — metrics vs HAR (Diebold-Mariano, Mincer-Zarnowitz, oracle gap on simulated data),
  factor importance, ``metrics.json`` and the HTML report;
* :func:`predict_run` — batch forecasts over a date range (with forecast-vs-realized monitoring) or live ones
  from the online store;
* :func:`fit_estimator` — one model on one fold, in-process or through the distributed training harness.

See docs/runs.md. Importing this package loads neither torch, lightgbm nor feast.
"""

from l2vol.runs.config import (
    HAR_VARIANTS,
    TARGETS,
    DataSection,
    ModelSection,
    RunConfig,
    SplitsSection,
    load_run_config,
)
from l2vol.runs.fit import TORCH_MODELS, choose_har, fit_estimator, har_params
from l2vol.runs.run import (
    RunResult,
    default_run_uri,
    evaluate_run,
    load_models,
    load_run,
    monitoring_summary,
    predict_run,
    train_run,
)

__all__ = [
    "HAR_VARIANTS",
    "TARGETS",
    "TORCH_MODELS",
    "DataSection",
    "ModelSection",
    "RunConfig",
    "RunResult",
    "SplitsSection",
    "choose_har",
    "default_run_uri",
    "evaluate_run",
    "fit_estimator",
    "har_params",
    "load_models",
    "load_run",
    "load_run_config",
    "monitoring_summary",
    "predict_run",
    "train_run",
]
