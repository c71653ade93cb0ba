"""Parallel_DE driver in one process (world size 1, several individuals): selection, diversity, checkpoints, resume.

The 2-process gloo tests (consistency across ranks, kill-and-resume, rank failure) are in
tests/integration/test_parallel_de_dist.py.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from training_data import single_symbol_frame

from l2vol.training import checkpoint as ckpt
from l2vol.training import de as de_module
from l2vol.training.config import TrainConfig
from l2vol.training.dist import DistContext
from l2vol.training.parallel_de import (
    StateCodec,
    _split_bits,
    _with_bits,
    plot_history,
    population_diversity,
    train_parallel_de,
)
from l2vol.training.task import Task

SINGLE = DistContext(rank=0, world_size=1, local_rank=0, device="cpu", backend=None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


FRAMES = {"train": single_symbol_frame(1200, 1), "val": single_symbol_frame(400, 2)}


def make_config(out, **overrides) -> TrainConfig:
    raw = {
        "model": "mlp",
        "model_params": {"hidden": [16]},  # dropout 0.1 (default): the global torch RNG matters for resume
        "data": {"train": "unused.parquet", "val": "unused.parquet", "val_subsample": 200},
        "optim": {"batch_size": 64, "lr": 3e-3},
        "budget": {"steps": 30},
        "parallel_de": {"individuals_per_rank": 4, "local_steps": 5},
        "out": str(out),
        "device": "cpu",
        "timeout_s": 30,
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw[key] = {**raw.get(key, {}), **value}
        else:
            raw[key] = value
    return TrainConfig.model_validate(raw)


def make_task(config: TrainConfig) -> Task:
    return Task(config, frames=FRAMES)


def full_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


class RecordingDE(de_module.DifferentialEvolution):
    """The real DE, with every selection's inputs and outputs kept for re-evaluation."""

    calls: list[dict[str, torch.Tensor]] = []

    def tell(self, population, fitness, trials, trial_fitness):
        new_pop, new_fit, accepted = super().tell(population, fitness, trials, trial_fitness)
        RecordingDE.calls.append(
            {
                "pop": population.clone(),
                "fit": fitness.clone(),
                "trials": trials.clone(),
                "tfit": trial_fitness.clone(),
                "new_pop": new_pop.clone(),
                "accepted": accepted.clone(),
            }
        )
        return new_pop, new_fit, accepted


def test_population_below_four_is_refused(tmp_path):
    config = make_config(tmp_path, parallel_de={"individuals_per_rank": 3})
    with pytest.raises(
        ValueError, match=r"1 x individuals_per_rank 3 = 3.*raise parallel_de.individuals_per_rank to 4"
    ):
        train_parallel_de(config, make_task(config), SINGLE)


def test_budget_below_one_generation_is_refused(tmp_path):
    config = make_config(tmp_path, budget={"steps": 4})
    with pytest.raises(ValueError, match="budget.steps=4 is less than parallel_de.local_steps=5"):
        train_parallel_de(config, make_task(config), SINGLE)


def test_selection_never_worsens_an_individual(tmp_path, monkeypatch):
    """Re-score the stored targets and selected states on each generation's fitness batch: never worse."""
    RecordingDE.calls = []
    monkeypatch.setattr(de_module, "DifferentialEvolution", RecordingDE)
    config = make_config(tmp_path)
    task = make_task(config)
    module, history = train_parallel_de(config, task, SINGLE)
    assert len(RecordingDE.calls) == len(history["generations"]) == 6
    codec = StateCodec(module)
    probe = task.build_module(0)
    accepted_total = 0
    for g, call in enumerate(RecordingDE.calls):
        batch = task.fitness_batch(g)
        for j in range(call["pop"].shape[0]):
            codec.load(probe, call["pop"][j])
            before = task.fitness(probe, batch)
            codec.load(probe, call["new_pop"][j])
            after = task.fitness(probe, batch)
            assert before == pytest.approx(float(call["fit"][j]), rel=1e-6)
            assert after <= before, f"generation {g}, individual {j}: {after} > {before}"
            if call["accepted"][j]:
                assert torch.equal(call["new_pop"][j], call["trials"][j])
                assert after == pytest.approx(float(call["tfit"][j]), rel=1e-6)
            else:
                assert torch.equal(call["new_pop"][j], call["pop"][j])
        accepted_total += int(call["accepted"].sum())
        rec = history["generations"][g]
        assert rec["accepted"] == int(call["accepted"].sum())
        assert rec["diversity"] == pytest.approx(population_diversity(call["new_pop"], codec.param_mask))
    assert 0 < accepted_total < 6 * 4  # DE did select, and not blindly
    # The individuals the next generation trains are exactly the selected states (checkpoint of the last one).
    last = ckpt.load(str(tmp_path), 0, 6)
    for i, sd in enumerate(last["modules"]):
        assert torch.equal(codec.flatten(_loaded(task, sd)), RecordingDE.calls[-1]["new_pop"][i])
    assert history["final"]["chosen"]
    assert history["final"]["val_loss"] == pytest.approx(task.evaluate(module, "val")["loss"])
    assert history["steps"] == 30
    for key in ("train_s", "comm_s", "de_s", "total_s"):
        assert history["timings"][key] >= 0


def _loaded(task: Task, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    m = task.build_module(0)
    m.load_state_dict(state)
    return m


def test_diversity_of_a_hand_made_population():
    pop = torch.tensor([[0.0, 0.0, 100.0], [3.0, 4.0, -7.0], [0.0, 0.0, 1.0]])
    mask = torch.tensor([True, True, False])  # the third component is a buffer: left out
    # pairwise parameter distances: |(3,4)| = 5, 0, 5 → mean 10/3
    assert population_diversity(pop, mask) == pytest.approx(10 / 3)
    assert population_diversity(pop[:1], mask) == 0.0
    # float64 differences: two nearby large vectors are not rounded to the same point
    near = torch.tensor([[1e4, 1e4], [1e4 + 0.01, 1e4]], dtype=torch.float32)
    assert population_diversity(near) == pytest.approx(float(near[1, 0] - near[0, 0]), rel=1e-6)


def test_state_codec_covers_buffers_and_keeps_step_counters():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    net.train()
    net(torch.randn(8, 3))  # moves the running statistics and num_batches_tracked
    codec = StateCodec(net)
    assert codec.keys == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"]
    assert codec.dim == 6 + 2 + 2 + 2 + 2 + 2
    assert codec.param_mask.sum().item() == 12  # 6 + 2 + 2 + 2; the 4 running statistics are buffers
    vec = codec.flatten(net)
    other = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    codec.load(other, vec)
    assert torch.equal(codec.flatten(other), vec)
    assert torch.equal(other[1].running_var, net[1].running_var)
    assert int(other[1].num_batches_tracked) == 0  # counters are not part of the evolved vector
    with pytest.raises(ValueError, match="expected"):
        codec.load(other, vec[:-1])


def test_repair_floors_batchnorm_running_variances_at_eps_only():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2, eps=1e-3))
    codec = StateCodec(net)
    trials = torch.full((3, codec.dim), -0.5)
    repaired = codec.repair(trials)
    var = slice(codec.dim - 2, codec.dim)  # 1.running_var is the last key
    assert torch.equal(repaired[:, var], torch.full((3, 2), 1e-3))
    assert torch.equal(repaired[:, : codec.dim - 2], trials[:, : codec.dim - 2])  # weights, means: untouched
    codec.load(net, repaired[0])
    assert bool((net[1].running_var >= 1e-3).all())
    plain = StateCodec(torch.nn.Linear(3, 2))
    assert plain.repair(trials[:, :8]) is not None and torch.equal(plain.repair(trials[:, :8]), trials[:, :8])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_states_carry_their_fitness_bits_exactly(dtype):
    states = torch.randn(3, 5, dtype=dtype)
    fitness = torch.tensor([0.1, 1 / 3, float("inf")], dtype=torch.float64)
    rows = _with_bits(states, fitness)
    assert rows.dtype == dtype
    back_states, back_fit = _split_bits(rows, 5)
    assert torch.equal(back_states, states)
    assert back_fit.dtype == torch.float64 and torch.equal(back_fit, fitness)


def test_tabnet_fitness_scores_ghost_batches_whole_with_the_same_forecasts(tmp_path):
    """Fitness runs TabNet's ghost BatchNorm over the whole batch (eval mode: running statistics, so the
    virtual-batch chunks change nothing but the cost): the same number as the chunked forward, bit for bit, and the
    module comes back as it was."""
    from pytorch_tabnet.tab_network import GBN

    raw = make_config(tmp_path, optim={"lr": 1e-2}).model_dump(mode="json")
    raw["model"] = "tabnet"
    raw["model_params"] = {
        "n_d": 8,
        "n_a": 8,
        "n_steps": 2,
        "n_independent": 1,
        "n_shared": 1,
        "virtual_batch_size": 16,
    }
    config = TrainConfig.model_validate(raw)
    task = make_task(config)
    module = task.build_module(0)
    opt = task.make_optimizer(module)
    for step in range(5):  # move the running statistics away from their initial values
        task.train_step(module, opt, task.train_batch(rank=0, world_size=1, stream=0, step=step))
    batch = task.fitness_batch(0)
    ghosts = [m for m in module.modules() if isinstance(m, GBN)]
    assert ghosts and all(g.virtual_batch_size == 16 for g in ghosts)
    *inputs, target = batch
    module.eval()
    with torch.no_grad():  # the reference: pytorch-tabnet's own chunked forward, 16 rows per BatchNorm call
        pred = torch.cat(
            [task.predict_std(module, [t[i : i + 1024] for t in inputs]) for i in range(0, len(target), 1024)]
        )
    module.train()
    reference = float(((pred - target) ** 2).sum()) / len(target)
    assert task.fitness(module, batch) == reference
    assert module.training and all(g.virtual_batch_size == 16 and g.training for g in ghosts)


def test_elite_is_compared_on_the_current_generations_rows(tmp_path):
    """The elite's recorded fitness is its score on the last generation's subsample (re-scored every generation),
    and no individual of that generation beats it there."""
    config = make_config(tmp_path)
    task = make_task(config)
    module, history = train_parallel_de(config, task, SINGLE)
    last = ckpt.load(str(tmp_path), 0, 6)
    probe = task.build_module(0)
    codec = StateCodec(probe)
    codec.load(probe, last["elite_vec"])
    batch = task.fitness_batch(5)
    assert task.fitness(probe, batch) == pytest.approx(history["elite"]["fitness"], rel=1e-6)
    assert history["elite"]["fitness"] <= float(last["fitness"].min())
    assert history["generations"][-1]["elite"] == history["elite"]["fitness"]


def test_checkpoint_round_trip_prune_and_refusal(tmp_path):
    out = str(tmp_path)
    state = {
        "tensors": [torch.arange(5), torch.randn(2, 3)],
        "nested": {"f": 1.5, "none": None, "s": "x", "inf": float("inf")},
        "rng": ckpt.rng_state(),
    }
    for g in (1, 2, 3):
        ckpt.save(out, 1, g, state)
    assert ckpt.list_generations(out, 1) == [2, 3]  # the newest KEEP=2
    assert ckpt.list_generations(out, 0) == []
    loaded = ckpt.load(out, 1, 3)
    assert loaded["generation"] == 3 and loaded["rank"] == 1
    assert torch.equal(loaded["tensors"][1], state["tensors"][1])
    assert loaded["nested"] == state["nested"]
    assert not any(p.name.endswith(".tmp") or ".tmp." in p.name for p in (tmp_path / "checkpoints" / "rank1").iterdir())
    # RNG states come back exactly: the next draws repeat
    ckpt.set_rng_state(loaded["rng"])
    first = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002 - the global state is under test
    ckpt.set_rng_state(loaded["rng"])
    second = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]
    # weights_only: a pickled object is refused, with the file named
    ckpt.save(out, 0, 1, {"obj": _Opaque()})
    with pytest.raises(ValueError, match=r"rank0/gen000001\.pt: cannot be read"):
        ckpt.load(out, 0, 1)
    ckpt.clear(out, 1)
    assert ckpt.list_generations(out, 1) == []


class _Opaque:
    pass


def test_background_writer_snapshots_the_state_and_keeps_the_newest(tmp_path, monkeypatch):
    """The state is copied at submit: changing the live tensors (training goes on) while the write is pending does
    not reach the file. Writes land in order, atomically, and only the KEEP newest remain."""
    import threading

    out = str(tmp_path)
    release = threading.Event()
    real_save = ckpt.save

    def slow_save(*args, **kwargs):
        release.wait(10)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ckpt, "save", slow_save)
    live = torch.zeros(4)
    groups = [{"lr": 0.1, "params": [0]}]
    writer = ckpt.BackgroundWriter()
    writer.submit(out, 0, 1, {"w": live, "groups": groups, "history": {"generations": [1]}})
    assert writer.pending
    live += 7  # in place, as an optimizer step does
    groups[0]["lr"] = 0.5  # as the learning-rate ramp does
    release.set()
    writer.join()
    assert not writer.pending
    first = ckpt.load(out, 0, 1)
    assert torch.equal(first["w"], torch.zeros(4)) and first["groups"][0]["lr"] == 0.1
    for g in (2, 3):
        writer.submit(out, 0, g, {"w": live})
    writer.close()  # waits for the pending write and stops the thread
    assert not writer.pending
    assert ckpt.list_generations(out, 0) == [2, 3]
    assert torch.equal(ckpt.load(out, 0, 3)["w"], torch.full((4,), 7.0))
    assert not any(".tmp." in p.name for p in (tmp_path / "checkpoints" / "rank0").iterdir())


def test_background_write_error_is_raised_not_lost(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the run directory should be")
    writer = ckpt.BackgroundWriter()
    writer.submit(str(blocker), 0, 1, {"w": torch.zeros(2)})  # returns at once; the write fails in the background
    with pytest.raises(ckpt.CheckpointWriteError, match=r"rank0/gen000001\.pt: writing it in the background failed"):
        writer.join()
    writer.join()  # raised once: the writer is usable again
    writer.submit(str(tmp_path / "ok"), 0, 1, {"w": torch.zeros(2)})
    writer.submit(str(blocker), 0, 2, {"w": torch.zeros(2)})
    with pytest.raises(ckpt.CheckpointWriteError, match=r"gen000002\.pt"):
        writer.close()  # closing raises the pending write's error too
    assert ckpt.list_generations(str(tmp_path / "ok"), 0) == [1]


def test_a_failed_checkpoint_write_stops_the_run(tmp_path, monkeypatch):
    """A checkpoint that cannot be written in the background is an error of the run (at the next generation), not
    a silently missing file."""
    real_save = ckpt.save

    def failing_save(out, rank, generation, state, **kwargs):
        if generation == 2:
            raise OSError(28, "No space left on device")
        return real_save(out, rank, generation, state, **kwargs)

    monkeypatch.setattr(ckpt, "save", failing_save)
    config = make_config(tmp_path)
    with pytest.raises(ckpt.CheckpointWriteError, match=r"gen000002\.pt: .*No space left on device"):
        train_parallel_de(config, make_task(config), SINGLE)
    assert ckpt.list_generations(config.out, 0) == [1]


class CrashAfter:
    """A progress sink that crashes the run once ``generation`` generations are checkpointed."""

    def __init__(self, generation: int):
        self.generation, self.done = generation, 0

    def task(self, name, total):
        pass

    def advance(self, name, n=1, note=""):
        self.done += n
        if self.done >= self.generation:
            raise KeyboardInterrupt(f"killed after generation {self.done}")


@pytest.mark.parametrize("warmup", [0, 7], ids=["reset", "reset+warmup"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, warmup):
    pde = {"reset_warmup_steps": warmup}  # 7 > local_steps: a ramp spans a generation boundary (and a checkpoint)
    config_a = make_config(tmp_path / "a", parallel_de=pde)
    torch.manual_seed(11)
    module_a, history_a = train_parallel_de(config_a, make_task(config_a), SINGLE)

    config_b = make_config(tmp_path / "b", parallel_de=pde)
    torch.manual_seed(11)
    with pytest.raises(KeyboardInterrupt):
        train_parallel_de(config_b, make_task(config_b), SINGLE, progress=CrashAfter(3))
    assert ckpt.list_generations(config_b.out, 0) == [2, 3]
    torch.manual_seed(999)  # a restarted process has other RNG states: the checkpoint must restore them
    np.random.seed(999)  # noqa: NPY002
    module_b, history_b = train_parallel_de(config_b, make_task(config_b), SINGLE)

    assert history_b["resumed_from"] == 3
    assert_states_equal(full_state(module_a), full_state(module_b))
    strip = ("train_s", "comm_s", "de_s", "elapsed_s")
    recs_a = [{k: v for k, v in r.items() if k not in strip} for r in history_a["generations"]]
    recs_b = [{k: v for k, v in r.items() if k not in strip} for r in history_b["generations"]]
    assert recs_a == recs_b
    assert history_a["final"] == history_b["final"]
    # the individuals themselves, not only the chosen network
    for ga, gb in zip(ckpt.load(config_a.out, 0, 6)["modules"], ckpt.load(config_b.out, 0, 6)["modules"], strict=True):
        assert_states_equal(ga, gb)

    # Re-running a finished run trains nothing more and returns the same network (idempotent).
    module_c, history_c = train_parallel_de(config_b, make_task(config_b), SINGLE)
    assert history_c["resumed_from"] == 6
    assert_states_equal(full_state(module_a), full_state(module_c))


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path):
    config = make_config(tmp_path, budget={"steps": 10})
    train_parallel_de(config, make_task(config), SINGLE)
    changed = make_config(tmp_path, budget={"steps": 10}, optim={"lr": 1e-2})
    with pytest.raises(ValueError, match=r"different \['optim'\].*resume: false"):
        train_parallel_de(changed, make_task(changed), SINGLE)
    fresh = make_config(tmp_path, budget={"steps": 10}, optim={"lr": 1e-2}, resume=False)
    _, history = train_parallel_de(fresh, make_task(fresh), SINGLE)
    assert history["resumed_from"] is None and len(history["generations"]) == 2


def test_wall_clock_budget_stops_at_a_generation_boundary(tmp_path):
    config = make_config(tmp_path, budget={"steps": 1000, "wall_clock_s": 1e-6})
    module, history = train_parallel_de(config, make_task(config), SINGLE)
    assert history["stopped"] == "wall_clock"
    assert len(history["generations"]) == 1 and history["steps"] == 5


def test_plot_history_writes_a_png(tmp_path):
    history = {
        "population": 4,
        "generations": [
            {"step": 5, "best": 0.9, "median": 1.0, "diversity": 0.1},
            {"step": 10, "best": 0.5, "median": 0.7, "diversity": 0.2},
        ],
    }
    path = plot_history(history, str(tmp_path / "sub" / "history.png"))
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["history.png"]
    with pytest.raises(ValueError, match="no generation"):
        plot_history({"generations": []}, str(tmp_path / "empty.png"))


# ------------------------------------------------------------------------------------------- environment (dist.py)
def test_env_absent_means_a_single_process(monkeypatch):
    from l2vol.training.dist import init_distributed, read_env

    assert read_env({}) is None
    assert read_env({"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}) is None
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed(device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_distributed, ctx.is_main) == (0, 1, None, False, True)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed(device="cpu").backend is None  # a world of one needs no process group


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "0"}, "variable RANK is set but WORLD_SIZE is not"),
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set but RANK is not"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, r"RANK=2 is out of range \(must be 0..1\)"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE=0 is out of range"),
        ({"RANK": "1", "WORLD_SIZE": "2", "MASTER_PORT": "29500"}, "MASTER_ADDR is not set but WORLD_SIZE=2"),
        ({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, "MASTER_PORT is not set but WORLD_SIZE=2"),
        ({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "70000"}, "MASTER_PORT=70000 is out"),
        ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "-1"}, "LOCAL_RANK=-1 is out of range"),
    ],
)
def test_half_set_or_invalid_environment_is_refused(env, message):
    from l2vol.training.dist import DistConfigError, read_env

    with pytest.raises(DistConfigError, match=message):
        read_env(env)


def test_environment_of_a_pytorchjob_pod_is_read():
    from l2vol.training.dist import read_env

    # PyTorchJob sets no LOCAL_RANK (one process per pod): it defaults to 0
    env = {"RANK": "3", "WORLD_SIZE": "4", "MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456"}
    assert read_env(env) == {
        "rank": 3,
        "world_size": 4,
        "local_rank": 0,
        "master_addr": "job-master-0",
        "master_port": 23456,
    }


def test_module_entrypoint_runs_the_harness_with_parallel_de(tmp_path, monkeypatch):
    """``python -m l2vol.training.parallel_de --config FILE`` (in-process): algorithm forced, outputs written."""
    import json

    import yaml

    from l2vol.training.parallel_de import main

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    FRAMES["train"].to_parquet(tmp_path / "train.parquet")
    FRAMES["val"].to_parquet(tmp_path / "val.parquet")
    raw = make_config(tmp_path / "run", budget={"steps": 10}).model_dump(mode="json")
    raw["data"].update(train=str(tmp_path / "train.parquet"), val=str(tmp_path / "val.parquet"))
    raw["algorithm"] = "single"  # overridden by the entrypoint
    raw["threads"] = 1
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["--config", str(tmp_path / "c.yaml")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["algorithm"] == "parallel_de"
    assert len(metrics["history"]["generations"]) == 2
    assert metrics["final_diversity"] == metrics["history"]["generations"][-1]["diversity"]
    assert (tmp_path / "run" / "history.png").read_bytes()[:4] == b"\x89PNG"
