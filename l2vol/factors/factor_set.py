"""A selected factor set: which factors a model may use, and the dates the selection was fit on.

:func:`l2vol.factors.mining.factor_report` writes one (``reports/factors/factor_set.yaml``). Selecting
factors learns from data, so a factor set is fit on a date range like any normalizer: training must not
evaluate a model on a test fold that overlaps ``[fit_start, fit_end]``, and :func:`assert_no_overlap`
refuses it. The model is strict (``extra="forbid"``): a mistyped key in a hand-edited YAML is an error.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: Format version of the YAML written by :meth:`FactorSet.to_yaml`.
FORMAT_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SelectionRule(_Strict):
    """How the factors were chosen (see :func:`l2vol.factors.mining.select_factors`)."""

    method: Literal["cluster_representative"] = Field(
        "cluster_representative",
        description="hierarchical clustering of factors on 1 - |rank correlation|; one factor kept per cluster",
    )
    linkage: Literal["complete"] = Field(
        "complete", description="complete linkage: every pair inside a cluster has |rank corr| >= corr_threshold"
    )
    corr_threshold: float = Field(0.9, gt=0.0, le=1.0, description="|rank correlation| that makes factors redundant")
    keep: Literal["max_abs_mean_rank_ic"] = Field(
        "max_abs_mean_rank_ic", description="within a cluster keep the factor with the highest |mean RankIC|"
    )
    min_days: int = Field(1, ge=1, description="a factor needs a daily IC on at least this many dates to be eligible")


class FactorSet(_Strict):
    """The factors selected on ``[fit_start, fit_end]`` against ``primary_target``."""

    format_version: Literal[1] = FORMAT_VERSION
    name: str = Field(min_length=1, description="what the set is for, e.g. vol_forecast")
    version: int = Field(1, ge=1, description="version of this named set, bumped by whoever refits it")
    factors: list[str] = Field(min_length=1, description="selected factor names (registry names)")
    primary_target: str = Field(description="target column the selection ranked factors on, e.g. rv_next_bucket")
    selection: SelectionRule = Field(default_factory=SelectionRule)
    fit_start: dt.date = Field(description="first date whose data the selection saw")
    fit_end: dt.date = Field(description="last date whose data the selection saw (targets of it included)")
    bucket: str = Field("5min", description="bucket length of the factor table it was fit on")
    source: str = Field("", description="location of the factor store it was fit on")
    source_manifests: dict[str, str] = Field(
        default_factory=dict,
        description="table -> sha256 over the committed partitions (date and part hashes) in the fit range",
    )

    @model_validator(mode="after")
    def _check(self) -> FactorSet:
        if self.fit_end < self.fit_start:
            raise ValueError(f"fit_end {self.fit_end} is before fit_start {self.fit_start}")
        dupes = sorted({f for f in self.factors if self.factors.count(f) > 1})
        if dupes:
            raise ValueError(f"factors listed more than once: {', '.join(dupes)}")
        return self

    def overlaps(self, start: dt.date | str, end: dt.date | str) -> bool:
        """True when the closed date range [start, end] shares a date with [fit_start, fit_end]."""
        lo, hi = _date(start), _date(end)
        if hi < lo:
            raise ValueError(f"empty range: end {hi} is before start {lo}")
        return lo <= self.fit_end and self.fit_start <= hi

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, *, where: str = "<factor set>") -> FactorSet:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{where}: invalid YAML ({exc})") from exc
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: a factor set is a YAML mapping, got {type(raw).__name__}")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{where}: invalid factor set: {problems}") from exc

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(self.to_yaml())
        return p

    @classmethod
    def load(cls, path: str | Path) -> FactorSet:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ValueError(f"{p}: cannot read factor set ({exc.strerror})") from exc
        return cls.from_yaml(text, where=str(p))


class FactorSetLeakError(ValueError):
    """A factor set was fit on dates that a test fold evaluates on."""


def assert_no_overlap(factor_set: FactorSet, test_start: dt.date | str, test_end: dt.date | str) -> None:
    """Refuse a test fold [test_start, test_end] that shares dates with the factor set's fit range.

    Raises :class:`FactorSetLeakError` naming the set, both ranges and the overlapping dates.
    """
    if factor_set.overlaps(test_start, test_end):
        lo, hi = _date(test_start), _date(test_end)
        raise FactorSetLeakError(
            f"factor set {factor_set.name!r} v{factor_set.version} was fit on "
            f"{factor_set.fit_start}..{factor_set.fit_end}, which overlaps the test fold {lo}..{hi} "
            f"(shared dates {max(lo, factor_set.fit_start)}..{min(hi, factor_set.fit_end)}): factor selection "
            "must see train/validation data only; refit the factor set on dates before the test fold"
        )


def _date(d: dt.date | str) -> dt.date:
    if isinstance(d, dt.datetime):
        return d.date()
    return d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d))
