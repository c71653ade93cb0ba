"""Realized-volatility forecasting models with one estimator contract (DESIGN §5).

``MODELS`` maps registry names to classes: ``naive``, ``har``, ``lightgbm``, ``tabnet``, ``mlp``, ``lstm``,
``ensemble``. Each class has ``debug()`` (a configuration that trains in seconds on CPU); ``Estimator.load``
loads any saved model. Importing this package imports neither torch nor lightgbm (they load inside the
methods that need them). See docs/models.md.
"""

from l2vol.models.base import Estimator, LogTargetRegressor, NotFittedError, Standardizer, fit_bias_factor
from l2vol.models.baselines import DAILY_HAR, HAR, INTRADAY_HAR, NaivePersistence
from l2vol.models.ensemble import Ensemble, simplex_least_squares
from l2vol.models.gbm import LightGBMRegressor
from l2vol.models.neural import MLPRegressor
from l2vol.models.sequence import LSTMAttentionRegressor, causal_window_index, causal_windows
from l2vol.models.tabnet import TabNetRegressor

MODELS: dict[str, type[Estimator]] = {
    "naive": NaivePersistence,
    "har": HAR,
    "lightgbm": LightGBMRegressor,
    "tabnet": TabNetRegressor,
    "mlp": MLPRegressor,
    "lstm": LSTMAttentionRegressor,
    "ensemble": Ensemble,
}


def load_model(uri: str) -> Estimator:
    """Load any model saved with ``save(uri)``."""
    return Estimator.load(uri)


__all__ = [
    "DAILY_HAR",
    "HAR",
    "INTRADAY_HAR",
    "MODELS",
    "Ensemble",
    "Estimator",
    "LSTMAttentionRegressor",
    "LightGBMRegressor",
    "LogTargetRegressor",
    "MLPRegressor",
    "NaivePersistence",
    "NotFittedError",
    "Standardizer",
    "TabNetRegressor",
    "causal_window_index",
    "causal_windows",
    "fit_bias_factor",
    "load_model",
    "simplex_least_squares",
]
