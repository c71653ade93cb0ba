"""The training task and harness (l2vol.training.task / harness / baselines in one process): deterministic sharded
batches, train-only normalization, the fitted l2vol estimator equal to the trained network, each model kind
learning, and a single-process run writing its outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from training_data import training_panel

torch = pytest.importorskip("torch")

from l2vol.models import Estimator  # noqa: E402
from l2vol.training.config import TrainConfig, load_train_config  # noqa: E402
from l2vol.training.task import Task  # noqa: E402

PARAMS = {
    "mlp": {"hidden": [16]},
    "tabnet": {"n_d": 8, "n_a": 8, "n_steps": 2, "n_independent": 1, "n_shared": 1, "virtual_batch_size": 32},
    "lstm": {"window": 4, "hidden": 8, "head_hidden": 8, "symbol_dim": 4, "industry_dim": 2},
}


def make_panel(seed: int) -> pd.DataFrame:
    """Six symbols × 150 buckets with zero-RV rows, a missing target and another horizon's target."""
    return training_panel(seed, n_sym=6, n_ts=150, zero_every=29, extras=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("training_data")
    for name, seed in (("train", 0), ("val", 1), ("test", 2)):
        make_panel(seed).to_parquet(d / f"{name}.parquet")
    return d


def config(data_dir, out, model="mlp", **kw) -> TrainConfig:
    base = {
        "model": model,
        "model_params": PARAMS[model],
        "data": {
            "train": str(data_dir / "train.parquet"),
            "val": str(data_dir / "val.parquet"),
            "test": str(data_dir / "test.parquet"),
            "val_subsample": 300,
        },
        "optim": {"lr": 3e-3, "batch_size": 64},
        "budget": {"steps": 30},
        "parallel_de": {"individuals_per_rank": 4, "local_steps": 10},
        "local_sgd": {"sync_every": 10},
        "threads": 1,
        "out": str(out),
    }
    base.update(kw)
    return TrainConfig.model_validate(base)


def test_features_exclude_keys_and_every_target_and_count_excluded_rows(data_dir, tmp_path):
    task = Task(config(data_dir, tmp_path))
    assert task.features == ["a", "b", "c"]  # not rv_next_day, zero_next_bucket, symbol, ts, industry
    train = pd.read_parquet(data_dir / "train.parquet")
    y = train["rv_next_bucket"].to_numpy()
    assert task.n_excluded["train"] == int((~(np.isfinite(y) & (y > 0))).sum()) > 0
    with pytest.raises(ValueError, match="look-ahead"):
        Task(
            config(
                data_dir,
                tmp_path,
                data={**config(data_dir, tmp_path).data.model_dump(), "features": ["a", "rv_next_day"]},
            )
        )


def test_a_negative_target_is_refused_naming_file_and_row(data_dir, tmp_path):
    bad = pd.read_parquet(data_dir / "train.parquet")
    bad.loc[7, "rv_next_bucket"] = -2.5e-5
    path = tmp_path / "bad_train.parquet"
    bad.to_parquet(path)
    cfg = config(data_dir, tmp_path)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"train": str(path)})})
    with pytest.raises(ValueError, match=rf"data.train \({path}\): row 7: rv_next_bucket = -2.5e-05 is negative"):
        Task(cfg)


def test_batches_are_deterministic_and_shards_partition_the_training_rows(data_dir, tmp_path):
    cfg = config(data_dir, tmp_path)
    t1, t2 = Task(cfg), Task(cfg)
    b1 = t1.train_batch(rank=1, world_size=3, stream=2, step=7)
    b2 = t2.train_batch(rank=1, world_size=3, stream=2, step=7)
    assert all(torch.equal(x, y) for x, y in zip(b1, b2, strict=True))
    other = t1.train_batch(rank=1, world_size=3, stream=3, step=7)
    assert not torch.equal(b1[0], other[0])  # another stream draws other rows

    shards = [set(t1.shard(r, 3).tolist()) for r in range(3)]
    assert all(not (shards[i] & shards[j]) for i in range(3) for j in range(i + 1, 3))
    assert set().union(*shards) == set(t1.splits["train"].rows.tolist())
    for r in range(3):  # a rank's batches come from its own shard only, and cover it within an epoch
        seen = np.concatenate([t1._batch_rows(r, 3, 0, s) for s in range(6)])
        assert set(seen.tolist()) <= shards[r]
        n = len(shards[r])
        assert set(seen[:n].tolist()) == shards[r]

    f1, f2 = t1.fitness_rows(4), t2.fitness_rows(4)
    assert np.array_equal(f1, f2) and len(f1) == 300 and not np.array_equal(f1, t1.fitness_rows(5))
    assert np.isfinite(t1.splits["val"].z[f1]).all()  # excluded rows never enter a loss


def test_normalizer_and_batches_ignore_validation_and_test_rows(data_dir, tmp_path):
    cfg = config(data_dir, tmp_path)
    frames = {k: pd.read_parquet(data_dir / f"{k}.parquet") for k in ("train", "val", "test")}
    a = Task(cfg, frames=frames)
    shifted = {k: v.copy() for k, v in frames.items()}
    for k in ("val", "test"):
        shifted[k][["a", "b", "c"]] = shifted[k][["a", "b", "c"]] * 100 + 5
        shifted[k]["rv_next_bucket"] *= 50
    b = Task(cfg, frames=shifted)
    assert a.normalizer.to_json() == b.normalizer.to_json()
    assert (a.z_mean, a.z_std) == (b.z_mean, b.z_std)
    for step in range(3):
        ba = a.train_batch(rank=0, world_size=2, stream=0, step=step)
        bb = b.train_batch(rank=0, world_size=2, stream=0, step=step)
        assert all(torch.equal(x, y) for x, y in zip(ba, bb, strict=True))


@pytest.mark.parametrize("kind", ["mlp", "tabnet", "lstm"])
def test_each_model_learns_and_becomes_an_equivalent_l2vol_estimator(kind, data_dir, tmp_path):
    torch.manual_seed(0)
    task = Task(config(data_dir, tmp_path, model=kind))
    module = task.build_module(3)
    again = task.build_module(3)
    assert all(
        torch.equal(x, y) for x, y in zip(module.state_dict().values(), again.state_dict().values(), strict=True)
    )
    opt = task.make_optimizer(module)
    before = task.evaluate(module, "val")["loss"]
    for step in range(40):
        task.train_step(module, opt, task.train_batch(rank=0, world_size=1, stream=0, step=step))
    after = task.evaluate(module, "val")
    assert after["loss"] < 0.8 * before, (before, after)
    assert np.isfinite(after["qlike"]) and np.isfinite(after["rmspe"])

    est = task.to_estimator(module)
    assert type(est).name == kind
    test_frame = pd.read_parquet(data_dir / "test.parquet")
    pred = est.predict(test_frame)
    expected = est.bias_factor_ * np.exp(task.predict_log(module, "test"))
    np.testing.assert_allclose(pred, expected, rtol=1e-6)
    ok = task.splits["test"].rows  # the metrics of evaluate() are those of the estimator's forecasts
    from l2vol.evaluation.metrics import qlike

    y = test_frame["rv_next_bucket"].to_numpy()[ok]
    assert qlike(y, pred[ok]) == pytest.approx(task.evaluate(module, "test")["qlike"], rel=1e-9)
    # bias factor fit on validation rows (ratio: mean forecast = mean realized RV there)
    val = pd.read_parquet(data_dir / "val.parquet")
    vrows = task.splits["val"].rows
    assert est.predict(val)[vrows].sum() == pytest.approx(val["rv_next_bucket"].to_numpy()[vrows].sum(), rel=1e-9)

    est.save(str(tmp_path / "model"))
    loaded = Estimator.load(str(tmp_path / "model"))
    assert type(loaded) is type(est)
    assert np.array_equal(loaded.predict(test_frame), pred)


def test_single_process_run_writes_model_metrics_and_plot(data_dir, tmp_path):
    from l2vol.training.__main__ import main
    from l2vol.training.harness import run

    cfg = config(data_dir, tmp_path / "out", algorithm="single")
    metrics = run(cfg)
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert doc["algorithm"] == "single" and doc["world_size"] == 1
    assert doc["test"]["qlike"] == pytest.approx(metrics["test"]["qlike"])
    assert [p["step"] for p in doc["history"]["points"]] == [0, 10, 20, 30]
    assert doc["history"]["points"][-1]["fitness"] < doc["history"]["points"][0]["fitness"]
    assert doc["timings"]["wall_s"] > 0 and 0 <= doc["timings"]["de_comm_share"] < 1
    assert (tmp_path / "out" / "history.png").read_bytes()[:4] == b"\x89PNG"
    model = Estimator.load(str(tmp_path / "out" / "model"))
    test_frame = pd.read_parquet(data_dir / "test.parquet")
    rows = np.flatnonzero(test_frame["rv_next_bucket"].to_numpy() > 0)
    from l2vol.evaluation.metrics import qlike

    pred = model.predict(test_frame)[rows]
    assert qlike(test_frame["rv_next_bucket"].to_numpy()[rows], pred) == pytest.approx(doc["test"]["qlike"], rel=1e-9)

    # the same config through the entrypoint, another algorithm, repeatable to the last bit
    import yaml

    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({**cfg.model_dump(mode="json"), "out": str(tmp_path / "cli")}))
    assert load_train_config(path).model == "mlp"
    assert main(["--config", str(path), "--algorithm", "local_sgd"]) == 0
    again = run(cfg.model_copy(update={"algorithm": "local_sgd", "out": str(tmp_path / "cli2")}))
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert cli["algorithm"] == "local_sgd" and cli["test"]["qlike"] == again["test"]["qlike"]
    # with one process every baseline is the same computation
    assert again["test"]["qlike"] == metrics["test"]["qlike"]


def test_entrypoint_errors_are_one_line_and_non_zero(tmp_path, capsys):
    from l2vol.training.__main__ import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: mlp\ndata: {train: /nope/train.parquet, val: /nope/val.parquet}\nout: x\nbogus: 1\n")
    assert main(["--config", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert "bogus" in err and len(err.splitlines()) == 1
    bad.write_text("model: mlp\ndata: {train: /nope/train.parquet, val: /nope/val.parquet}\nout: x\nthreads: 1\n")
    assert main(["--config", str(bad), "--algorithm", "single"]) == 1
    err = capsys.readouterr().err.strip()
    assert "/nope/train.parquet" in err and len(err.splitlines()) == 1


def test_unevaluable_states_are_infinitely_unfit(data_dir, tmp_path):
    """A DE trial can combine BatchNorm running variances into a negative one (TabNet's entmax then fails) or
    produce non-finite weights: such a state gets fitness inf, never an exception, so selection rejects it."""
    task = Task(config(data_dir, tmp_path, model="tabnet"))
    module = task.build_module(0)
    batch = task.fitness_batch(0)
    assert np.isfinite(task.fitness(module, batch))
    var = next(k for k in module.state_dict() if k.endswith("running_var"))
    module.state_dict()[var].fill_(-1.0)
    assert task.fitness(module, batch) == float("inf")
    mlp = Task(config(data_dir, tmp_path))
    net = mlp.build_module(0)
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    assert mlp.fitness(net, mlp.fitness_batch(0)) == float("inf")


def test_fitness_shared_by_chunks_adds_up_to_the_fitness_bit_for_bit(data_dir, tmp_path, monkeypatch):
    """Parallel_DE's ranks re-score the elite together: each scores the chunks c with c mod parts == part, and the
    element-wise sum of their chunk sums, added in chunk order, is exactly the one-rank fitness."""
    import l2vol.training.task as task_module

    monkeypatch.setattr(task_module, "EVAL_CHUNK", 64)  # the 300-row subsample: 5 chunks
    task = Task(config(data_dir, tmp_path, model="tabnet"))
    module = task.build_module(3)
    batch = task.fitness_batch(0)
    whole = task.fitness_parts(module, batch)
    assert task.fitness_chunks(batch) == len(whole) == 5 and all(v > 0 for v in whole)
    for parts in (2, 3, 7):
        shares = [task.fitness_parts(module, batch, part=r, parts=parts) for r in range(parts)]
        for r, share in enumerate(shares):
            assert [c for c, v in enumerate(share) if v != 0.0] == list(range(r, 5, parts))
        summed = torch.tensor(shares, dtype=torch.float64).sum(dim=0).tolist()
        assert summed == whole
        assert task.fitness_of_parts(summed, batch) == task.fitness(module, batch)
    var = next(k for k in module.state_dict() if k.endswith("running_var"))
    module.state_dict()[var].fill_(-1.0)
    assert task.fitness_parts(module, batch, part=1, parts=2) == [float("inf")] * 5
