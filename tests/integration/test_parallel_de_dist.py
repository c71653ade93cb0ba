"""Parallel_DE with 2 real processes on loopback (gloo, CPU): consistency across ranks, selection never worsening,
kill-and-resume bit-identical, and a dead rank turned into an error on the other rank within the timeout.

Each rank is this file run as a script (``python test_parallel_de_dist.py CONFIG RESULT_DIR``) with RANK,
WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT in its environment, as torchrun or a PyTorchJob sets them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORLD = 2
TIMEOUT_S = 20.0
GENERATIONS = 4
PEER_FAILURE_EXIT = 3


def _digest(obj) -> str:
    """A hash of tensors, dicts, lists and primitives (bitwise for tensors)."""
    import torch

    h = hashlib.sha256()

    def feed(o):
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(o, dict):
            for k in sorted(o):
                h.update(f"K{k}".encode())
                feed(o[k])
        elif isinstance(o, list | tuple):
            h.update(b"[")
            for v in o:
                feed(v)
            h.update(b"]")
        else:
            h.update(repr(o).encode())

    feed(obj)
    return h.hexdigest()


def _worker(config_path: str, result_dir: str) -> int:
    """One rank: train, then re-score every selection on this rank and write hashes, checks and the final state."""
    import torch

    torch.set_num_threads(1)
    from l2vol.training import de as de_module
    from l2vol.training import task as task_module

    # Fitness in 64-row forward chunks: the 200-row subsample is 4 chunks, so the elite's re-scoring is really
    # shared (two chunks on each rank).
    task_module.EVAL_CHUNK = 64
    from l2vol.training.config import load_train_config
    from l2vol.training.dist import PeerFailure, barrier, init_distributed, shutdown
    from l2vol.training.parallel_de import StateCodec, train_parallel_de
    from l2vol.training.task import build_task

    calls: list[dict] = []
    elite_scores: list[dict] = []
    one_rank_parts, batch_of = task_module.Task.fitness_parts, task_module.Task.fitness_batch
    scored_generation = [-1]

    def recording_batch(self, generation):
        scored_generation[0] = generation
        return batch_of(self, generation)

    def recording_parts(self, module, batch, *, part=0, parts=1):
        out = one_rank_parts(self, module, batch, part=part, parts=parts)
        if parts > 1:  # the elite's shared re-scoring (targets and trials are scored whole, by their own rank)
            state = {k: v.clone() for k, v in module.state_dict().items()}
            elite_scores.append({"generation": scored_generation[0], "parts": out, "state": state})
        return out

    task_module.Task.fitness_batch, task_module.Task.fitness_parts = recording_batch, recording_parts

    class RecordingDE(de_module.DifferentialEvolution):
        def tell(self, population, fitness, trials, trial_fitness):
            new_pop, new_fit, accepted = super().tell(population, fitness, trials, trial_fitness)
            calls.append(
                {
                    "pop": population.clone(),
                    "fit": fitness.clone(),
                    "trials": trials.clone(),
                    "tfit": trial_fitness.clone(),
                    "new_pop": new_pop.clone(),
                    "best_after_selection": float(new_fit.min()),
                    "de_state": _digest(self.state_dict()),
                }
            )
            return new_pop, new_fit, accepted

    de_module.DifferentialEvolution = RecordingDE
    config = load_train_config(config_path)
    started = time.monotonic()
    ctx = init_distributed(timeout_s=config.timeout_s, device="cpu")
    try:
        task = build_task(config, device=ctx.device)
        module, history = train_parallel_de(config, task, ctx)
        barrier(ctx, config.timeout_s)  # gloo's monitored barrier: every rank finished
    except PeerFailure as exc:
        print(f"PEER FAILURE after {time.monotonic() - started:.1f}s: {exc}", file=sys.stderr, flush=True)
        return PEER_FAILURE_EXIT
    finally:
        shutdown(ctx)
    codec = StateCodec(module)
    probe = task.build_module(0)
    first = history["resumed_from"] or 0
    gens = []
    for offset, call in enumerate(calls):
        g = first + offset
        batch = task.fitness_batch(g)
        worsened, mismatched = [], []
        for j in range(call["pop"].shape[0]):
            codec.load(probe, call["pop"][j])
            before = task.fitness(probe, batch)
            codec.load(probe, call["new_pop"][j])
            after = task.fitness(probe, batch)
            if after > before:
                worsened.append(j)
            if abs(before - float(call["fit"][j])) > 1e-6 * max(1.0, abs(before)):
                mismatched.append(j)
        gens.append(
            {
                "generation": g,
                "population": _digest([call["pop"], call["fit"], call["trials"], call["tfit"], call["new_pop"]]),
                "de_state": call["de_state"],
                "worsened": worsened,
                "fitness_mismatch": mismatched,
                "accepted": int((call["new_pop"] != call["pop"]).any(dim=1).sum()),
            }
        )
    # Each re-scoring of the elite (both ranks, a share of the chunks each), against this rank's one-rank score of the
    # same state on the same rows, and the elite fitness the generation recorded.
    by_gen = {g["generation"]: g for g in history["generations"]}
    elite_checks = []
    for rec in elite_scores:
        probe.load_state_dict(rec["state"])
        batch = task.fitness_batch(rec["generation"])
        elite_checks.append(
            {
                "generation": rec["generation"],
                "parts": rec["parts"],
                "one_rank_parts": task.fitness_parts(probe, batch),
                "one_rank_fitness": task.fitness(probe, batch),
                "best_after_selection": calls[rec["generation"] - first]["best_after_selection"],
                "recorded_elite": by_gen[rec["generation"]]["elite"],
            }
        )
    out = Path(result_dir)
    torch.save({k: v.clone() for k, v in module.state_dict().items()}, out / f"final_rank{ctx.rank}.pt")
    (out / f"rank{ctx.rank}.json").write_text(
        json.dumps(
            {
                "generations": gens,
                "resumed_from": history["resumed_from"],
                "final": history["final"],
                "elite_checks": elite_checks,
            }
        )
    )
    return 0


# ---------------------------------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pde_data")
    from training_data import single_symbol_frame

    single_symbol_frame(1200, 1).to_parquet(d / "train.parquet")
    single_symbol_frame(400, 2).to_parquet(d / "val.parquet")
    return d


def _config(data_dir: Path, out: Path, *, timeout_s: float = TIMEOUT_S) -> Path:
    import yaml

    raw = {
        "model": "mlp",
        "model_params": {"hidden": [16]},
        "data": {"train": str(data_dir / "train.parquet"), "val": str(data_dir / "val.parquet"), "val_subsample": 200},
        "optim": {"batch_size": 64, "lr": 3e-3},
        "budget": {"steps": 5 * GENERATIONS},
        "parallel_de": {"individuals_per_rank": 2, "local_steps": 5},  # population 4 over 2 ranks
        "out": str(out),
        "device": "cpu",
        "timeout_s": timeout_s,
        "threads": 1,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _launch(
    config: Path, result_dir: Path, *, fault: tuple[int, int] | None = None, fault_mode: str = "exit"
) -> list[dict]:
    """Run the 2 ranks to completion (bounded); per rank: return code, stderr, and when it exited."""
    from support import free_port, stop_process
    from training_data import rank_env  # here, not at the top: the ranks run this file as a script

    result_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = []
    for rank in range(WORLD):
        # The ranks run this file as a script: tests/ (training_data, support) must be importable there too.
        tests_dir = str(Path(__file__).resolve().parents[1])
        pythonpath = os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))
        env = rank_env(os.environ, rank, WORLD, port, PYTHONPATH=pythonpath)
        env.pop("L2VOL_FAULT_RANK", None)
        env.pop("L2VOL_FAULT_GENERATION", None)
        env.pop("L2VOL_FAULT_MODE", None)
        if fault is not None:
            env["L2VOL_FAULT_RANK"], env["L2VOL_FAULT_GENERATION"] = str(fault[0]), str(fault[1])
            env["L2VOL_FAULT_MODE"] = fault_mode
        log = open(result_dir / f"stderr_rank{rank}.txt", "w")  # noqa: SIM115 - closed below
        procs.append(
            (subprocess.Popen([sys.executable, __file__, str(config), str(result_dir)], env=env, stderr=log), log)
        )
    ended: dict[int, float] = {}
    deadline = time.monotonic() + 180
    try:
        while len(ended) < WORLD and time.monotonic() < deadline:
            if fault_mode == "hang" and len(ended) == 1 and fault and fault[0] not in ended:
                break  # the survivor has reported; the frozen rank is stopped below
            for rank, (p, _) in enumerate(procs):
                if rank not in ended and p.poll() is not None:
                    ended[rank] = time.monotonic()
            time.sleep(0.05)
    finally:
        for p, log in procs:
            if p.poll() is None:
                stop_process(p)
            log.close()
    if fault_mode == "hang" and fault:
        ended.setdefault(fault[0], time.monotonic())
    assert len(ended) == WORLD, "a rank did not finish within 180 s"
    return [
        {"rc": p.returncode, "stderr": (result_dir / f"stderr_rank{r}.txt").read_text(), "ended": ended[r]}
        for r, (p, _) in enumerate(procs)
    ]


def _assert_ok(results: list[dict]) -> None:
    for rank, r in enumerate(results):
        assert r["rc"] == 0, f"rank {rank} exited with {r['rc']}:\n{r['stderr'][-3000:]}"


def _final_states(result_dir: Path) -> list[dict]:
    import torch

    return [torch.load(result_dir / f"final_rank{r}.pt", weights_only=True) for r in range(WORLD)]


def _reports(result_dir: Path) -> list[dict]:
    return [json.loads((result_dir / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("pde_uninterrupted")
    results = _launch(_config(data_dir, d / "out"), d / "res")
    _assert_ok(results)
    return d / "res"


@pytest.mark.integration
def test_ranks_hold_the_same_population_and_selection_never_worsens(uninterrupted):
    a, b = _reports(uninterrupted)
    assert [g["generation"] for g in a["generations"]] == list(range(GENERATIONS))
    for ga, gb in zip(a["generations"], b["generations"], strict=True):
        assert ga["population"] == gb["population"], f"generation {ga['generation']}: populations differ"
        assert ga["de_state"] == gb["de_state"], f"generation {ga['generation']}: DE states differ"
        for g in (ga, gb):  # re-scored on each rank
            assert g["worsened"] == [] and g["fitness_mismatch"] == []
    assert sum(g["accepted"] for g in a["generations"]) > 0
    assert a["final"] == b["final"]
    # The elite is re-scored from generation 1 on by both ranks, each on its share of the 4 chunks; the generation
    # records that score (or the new best, when it beat the elite), bit for bit what one rank computes.
    assert [c["generation"] for c in a["elite_checks"]] == list(range(1, GENERATIONS))
    for ca, cb in zip(a["elite_checks"], b["elite_checks"], strict=True):
        g = ca["generation"]  # chunk c on rank (c + g) mod 2
        assert [i for i, v in enumerate(ca["parts"]) if v] == [c for c in range(4) if (c + g) % 2 == 0]
        assert [i for i, v in enumerate(cb["parts"]) if v] == [c for c in range(4) if (c + g) % 2 == 1]
        assert (
            [x + y for x, y in zip(ca["parts"], cb["parts"], strict=True)]
            == ca["one_rank_parts"]
            == cb["one_rank_parts"]
        )
        expected = min(ca["one_rank_fitness"], ca["best_after_selection"])
        assert ca["recorded_elite"] == cb["recorded_elite"] == expected, ca["generation"]
    import torch

    s0, s1 = _final_states(uninterrupted)
    assert all(torch.equal(s0[k], s1[k]) for k in s0)


@pytest.mark.integration
def test_dead_rank_is_an_error_on_the_other_rank_and_the_rerun_resumes_bit_identically(
    data_dir, tmp_path, uninterrupted
):
    import torch

    config = _config(data_dir, tmp_path / "out")
    killed = _launch(config, tmp_path / "killed", fault=(1, 2))
    assert killed[1]["rc"] == 17, killed[1]["stderr"][-2000:]
    r0 = killed[0]
    assert r0["rc"] == PEER_FAILURE_EXIT, r0["stderr"][-3000:]
    assert "generation 2" in r0["stderr"] and "a peer rank failed" in r0["stderr"], r0["stderr"][-3000:]
    waited = r0["ended"] - killed[1]["ended"]
    assert waited < TIMEOUT_S + 10, f"rank 0 needed {waited:.1f}s after rank 1 died"

    resumed = _launch(config, tmp_path / "resumed")
    _assert_ok(resumed)
    reports = _reports(tmp_path / "resumed")
    assert [r["resumed_from"] for r in reports] == [2, 2]
    full = _reports(uninterrupted)
    # the resumed generations are the same populations and DE states as the uninterrupted run's
    for rep in reports:
        assert [(g["population"], g["de_state"]) for g in rep["generations"]] == [
            (g["population"], g["de_state"]) for g in full[0]["generations"][2:]
        ]
    for a, b in zip(_final_states(uninterrupted), _final_states(tmp_path / "resumed"), strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{k} differs after resume"


@pytest.mark.integration
@pytest.mark.slow
def test_a_rank_that_stops_responding_is_an_error_within_the_timeout(data_dir, tmp_path):
    import re

    timeout = 10.0
    config = _config(data_dir, tmp_path / "out", timeout_s=timeout)
    results = _launch(config, tmp_path / "hung", fault=(1, 1), fault_mode="hang")
    r0 = results[0]
    assert r0["rc"] == PEER_FAILURE_EXIT, r0["stderr"][-3000:]
    assert "generation 1" in r0["stderr"] and "a peer rank failed" in r0["stderr"], r0["stderr"][-3000:]
    waited = float(re.search(r"failed after ([0-9.]+)s \(collective timeout", r0["stderr"]).group(1))
    assert timeout - 1 <= waited < timeout + 10, f"the collective waited {waited:.1f}s with timeout {timeout}s"


if __name__ == "__main__":
    from l2vol.training.dist import exit_process

    exit_process(_worker(sys.argv[1], sys.argv[2]))
