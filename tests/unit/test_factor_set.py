"""The factor-set YAML model: strict round trip and the fit/test overlap guard."""

from __future__ import annotations

import datetime as dt

import pytest

from l2vol.factors.factor_set import FactorSet, FactorSetLeakError, SelectionRule, assert_no_overlap


def _set(**kw) -> FactorSet:
    base = dict(
        name="vol_forecast",
        version=3,
        factors=["rv", "har_rv_d", "relative_spread"],
        primary_target="rv_next_bucket",
        selection=SelectionRule(corr_threshold=0.85, min_days=2),
        fit_start=dt.date(2024, 1, 2),
        fit_end=dt.date(2024, 1, 31),
        source="file:///data/feat",
        source_manifests={"factors": "ab" * 32, "targets": "cd" * 32},
    )
    return FactorSet(**{**base, **kw})


def test_yaml_round_trip(tmp_path):
    fs = _set()
    assert FactorSet.from_yaml(fs.to_yaml()) == fs
    path = fs.save(tmp_path / "set.yaml")
    back = FactorSet.load(path)
    assert back == fs
    assert back.fit_start == dt.date(2024, 1, 2) and back.selection.corr_threshold == 0.85
    assert "fit_end: '2024-01-31'" in path.read_text()


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d["selection"].update(threshold=0.5), "selection.threshold"),
    ],
)
def test_extra_keys_are_refused(tmp_path, edit, where):
    import yaml

    raw = _set().model_dump(mode="json")
    edit(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=rf"bad.yaml: invalid factor set: {where}: Extra inputs are not permitted"):
        FactorSet.load(path)


def test_invalid_sets_are_refused():
    with pytest.raises(ValueError, match="fit_end 2024-01-01 is before fit_start 2024-01-02"):
        _set(fit_end=dt.date(2024, 1, 1))
    with pytest.raises(ValueError, match="listed more than once: rv"):
        _set(factors=["rv", "rv"])
    with pytest.raises(ValueError, match="factors"):
        _set(factors=[])
    with pytest.raises(ValueError, match="a factor set is a YAML mapping"):
        FactorSet.from_yaml("- rv\n- bv\n")
    with pytest.raises(ValueError, match="cannot read factor set"):
        FactorSet.load("/nonexistent/set.yaml")


@pytest.mark.parametrize(
    "start, end, overlaps",
    [
        ("2023-12-01", "2024-01-01", False),  # ends the day before the fit range
        ("2023-12-01", "2024-01-02", True),  # shares the first fit date
        ("2024-01-10", "2024-01-12", True),  # inside
        ("2023-12-01", "2024-03-01", True),  # covers it
        ("2024-01-31", "2024-02-15", True),  # shares the last fit date
        ("2024-02-01", "2024-02-15", False),  # starts the day after
    ],
)
def test_overlap(start, end, overlaps):
    fs = _set()
    assert fs.overlaps(start, end) is overlaps
    assert fs.overlaps(dt.date.fromisoformat(start), dt.date.fromisoformat(end)) is overlaps
    if overlaps:
        with pytest.raises(FactorSetLeakError, match=r"fit on 2024-01-02..2024-01-31, which overlaps the test fold"):
            assert_no_overlap(fs, start, end)
    else:
        assert_no_overlap(fs, start, end)


def test_overlap_error_names_the_shared_dates():
    with pytest.raises(FactorSetLeakError) as err:
        assert_no_overlap(_set(), "2024-01-20", "2024-02-20")
    msg = str(err.value)
    assert "'vol_forecast' v3" in msg and "shared dates 2024-01-20..2024-01-31" in msg
    assert isinstance(err.value, ValueError)
    with pytest.raises(ValueError, match="empty range"):
        _set().overlaps("2024-02-02", "2024-02-01")
