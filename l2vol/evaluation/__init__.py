"""Walk-forward evaluation: leakage-safe date splits, forecast losses and forecast-comparison tests.

See docs/evaluation.md. Imports no feature-store code (``l2vol.features``) and no torch/lightgbm.
"""

from l2vol.evaluation.forecast_tests import (
    default_nw_lag,
    diebold_mariano,
    hln_correction,
    mincer_zarnowitz,
    newey_west_covariance,
    newey_west_variance,
    period_means,
)
from l2vol.evaluation.metrics import (
    evaluate_forecasts,
    loss,
    mae,
    mse,
    oracle_gap,
    qlike,
    qlike_loss,
    r2_oos,
    rmspe,
)
from l2vol.evaluation.splits import (
    HORIZON_DAYS,
    Fold,
    LeakageError,
    assert_fold_compatible,
    buckets_to_days,
    check_no_leakage,
    horizon_days,
    walk_forward_splits,
)

__all__ = [
    "HORIZON_DAYS",
    "Fold",
    "LeakageError",
    "assert_fold_compatible",
    "buckets_to_days",
    "check_no_leakage",
    "default_nw_lag",
    "diebold_mariano",
    "evaluate_forecasts",
    "hln_correction",
    "horizon_days",
    "loss",
    "mae",
    "mincer_zarnowitz",
    "mse",
    "newey_west_covariance",
    "newey_west_variance",
    "oracle_gap",
    "period_means",
    "qlike",
    "qlike_loss",
    "r2_oos",
    "rmspe",
    "walk_forward_splits",
]
