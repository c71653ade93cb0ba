"""High-frequency volatility factors: registry, trading-clock buckets, factor families, targets, engine.

``build_factors(src, dst, ...)`` turns the clean ``snapshots``/``trades`` tables into the ``factors``
and ``targets`` tables (see :mod:`l2vol.factors.engine` and docs/factors.md). Every factor is a
registered pure function in :data:`REGISTRY` with a name, family, unit, inputs and warm-up.
"""

from l2vol.factors.buckets import BucketGrid, BucketSpec
from l2vol.factors.engine import FACTORS_TABLE, STATE_TABLE, TARGETS_TABLE, FactorPlan, build_factors
from l2vol.factors.registry import FAMILIES, REGISTRY, Factor, FactorRegistry, Warmup
from l2vol.factors.targets import HORIZONS

__all__ = [
    "FACTORS_TABLE",
    "FAMILIES",
    "HORIZONS",
    "REGISTRY",
    "STATE_TABLE",
    "TARGETS_TABLE",
    "BucketGrid",
    "BucketSpec",
    "Factor",
    "FactorPlan",
    "FactorRegistry",
    "Warmup",
    "build_factors",
]
