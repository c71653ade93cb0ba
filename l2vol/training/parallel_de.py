"""Parallel_DE: distributed training whose worker model states form a differential-evolution population (DESIGN §6).

Every rank holds ``parallel_de.individuals_per_rank`` individuals; an individual is a copy of the network (its full
state: parameters and buffers, e.g. TabNet's BatchNorm running statistics) with its own optimizer. One generation:

1. each individual takes ``k = parallel_de.local_steps`` optimizer steps on its rank's shard of the training rows
   (the task's loss, auxiliary losses included);
2. its fitness is scored on the generation's validation subsample (identical on every rank);
3. ranks all-gather the flattened states and fitness values, so every rank holds the whole population;
4. every rank runs the same DE step (:class:`l2vol.training.de.DifferentialEvolution`, seeded identically) and gets
   the same trials (BatchNorm running variances floored at the layer's eps: :meth:`StateCodec.repair`); each rank
   scores the trials of its own individuals on the same validation subsample;
5. ranks all-gather the trial fitness; greedy selection keeps the trial iff it is no worse than its target; an
   individual replaced by its trial loads the trial state and starts a fresh optimizer (its Adam moments belong to
   the point it left);
6. the elite (best state seen) is kept: re-scored on each generation's subsample (the ranks share its forward
   chunks) and replaced when the best individual beats it on those rows; the generation is recorded and
   checkpointed (written by a background thread while the next generation trains:
   :class:`l2vol.training.checkpoint.BackgroundWriter`).

All individuals start from one initialization broadcast from rank 0, so the population stays in one basin and DE's
vector differences are meaningful; selection compares target and trial on the same subsample, so an individual never
gets worse on it. The final network is chosen among the elite and the best individuals by the full validation loss;
test data is never looked at here.

Determinism: the global torch/numpy/Python generators are seeded from ``(seed, rank)`` at the start (dropout), batches
and fitness subsamples are pure functions of their indices, and checkpoints hold every generator's state, so a
resumed run ends bit-identical to an uninterrupted one. See docs/parallel_de.md.

Test hook: with ``L2VOL_FAULT_RANK=r`` and ``L2VOL_FAULT_GENERATION=g`` in the environment, rank ``r`` exits with
status 17 (``os._exit``) when generation ``g`` starts (with ``L2VOL_FAULT_MODE=hang`` it stops responding instead), to
test that the other ranks fail with a clear error within the timeout.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from l2vol.progress import Progress, ensure
from l2vol.training import checkpoint as ckpt
from l2vol.training.dist import (
    DistContext,
    PeerFailure,
    all_gather_flat,
    broadcast_module_state,
    guarded,
)

if TYPE_CHECKING:
    import torch

    from l2vol.training.config import TrainConfig
    from l2vol.training.task import Task

FAULT_RANK_ENV = "L2VOL_FAULT_RANK"
FAULT_GENERATION_ENV = "L2VOL_FAULT_GENERATION"
FAULT_MODE_ENV = "L2VOL_FAULT_MODE"
FAULT_EXIT_CODE = 17
MIN_POPULATION = 4
FINAL_CANDIDATES = 3  # best individuals of the last generation scored on the full validation set, besides the elite


class StateCodec:
    """Flattens a module's floating-point state (parameters and floating buffers) into one vector and back.

    Non-floating buffers (BatchNorm's ``num_batches_tracked``) are step counters: every individual takes the same
    number of steps, so they are equal across the population and are not evolved; a trial inherits its target's.
    Tensors that share storage (tied weights) appear once. The vector dtype is the widest floating dtype of the state,
    so flatten/load round-trips exactly.
    """

    def __init__(self, module: torch.nn.Module):
        import torch

        state = module.state_dict(keep_vars=False)
        param_ptrs = {p.data_ptr() for p in module.parameters()}
        seen: set[tuple[int, int]] = set()
        self.keys: list[str] = []
        self.shapes: list[torch.Size] = []
        self.is_param: list[bool] = []
        dtype = None
        for key, t in state.items():
            if not t.is_floating_point():
                continue
            ident = (t.data_ptr(), t.numel())
            if ident in seen:
                continue
            seen.add(ident)
            self.keys.append(key)
            self.shapes.append(t.shape)
            self.is_param.append(t.data_ptr() in param_ptrs)
            dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
        if not self.keys:
            raise ValueError("the module has no floating-point parameters or buffers to evolve")
        self.dtype = dtype
        self.numels = [math.prod(s) for s in self.shapes]
        self.dim = int(sum(self.numels))
        mask = torch.cat(
            [torch.full((n,), p, dtype=torch.bool) for n, p in zip(self.numels, self.is_param, strict=True)]
        )
        self.param_mask = mask
        # Lower bounds of the components that have one: a BatchNorm running variance is >= 0, and DE can combine
        # variances into a negative one (x + F * (a - b)); such components are floored at the layer's eps.
        floors = []
        for key, n in zip(self.keys, self.numels, strict=True):
            eps = None
            if key.endswith("running_var"):
                owner = module.get_submodule(key.rsplit(".", 1)[0]) if "." in key else module
                eps = float(getattr(owner, "eps", 0.0))
            floors.append(torch.full((n,), -math.inf if eps is None else eps, dtype=self.dtype))
        floor = torch.cat(floors)
        self.floor = floor if bool(torch.isfinite(floor).any()) else None

    def repair(self, vectors: torch.Tensor) -> torch.Tensor:
        """``vectors`` (rows are states) with every bounded component raised to its floor (BatchNorm running
        variances to the layer's eps); the vectors themselves when the state has no bounded component."""
        import torch

        if self.floor is None:
            return vectors
        return torch.maximum(vectors, self.floor.to(vectors.device, vectors.dtype))

    def flatten(self, module: torch.nn.Module) -> torch.Tensor:
        import torch

        state = module.state_dict()
        return torch.cat([state[k].detach().reshape(-1).to(self.dtype) for k in self.keys])

    def load(self, module: torch.nn.Module, vector: torch.Tensor) -> None:
        """Copy ``vector`` into the module's floating state in place (optimizers keep pointing at the same tensors)."""
        import torch

        if vector.shape != (self.dim,):
            raise ValueError(f"state vector has shape {tuple(vector.shape)}, expected ({self.dim},)")
        state = module.state_dict()
        with torch.no_grad():
            offset = 0
            for key, shape, n in zip(self.keys, self.shapes, self.numels, strict=True):
                t = state[key]
                t.copy_(vector[offset : offset + n].view(shape).to(t.dtype))
                offset += n


def population_diversity(population: torch.Tensor, param_mask: torch.Tensor | None = None) -> float:
    """Mean pairwise Euclidean distance between the individuals' parameter vectors (rows of ``population``).

    ``param_mask`` selects the parameter components (buffers such as running statistics are left out); computed
    from explicit differences in float64, not from a Gram matrix, because individuals of one basin are close
    relative to their norms.
    """
    import torch

    x = population if param_mask is None else population[:, param_mask.to(population.device)]
    if x.shape[0] < 2:
        return 0.0
    return float(torch.pdist(x.detach().to(torch.float64)).mean())


def seed_process_rngs(seed: int, rank: int) -> None:
    """Seed torch's (CPU and CUDA), numpy's and Python's global generators from ``(seed, rank)``.

    Dropout draws from torch's global generator, whose start state is otherwise whatever the process inherited;
    ranks get different streams (different dropout masks), runs with the same seed the same ones.
    """
    import random

    import numpy as np
    import torch

    state = np.random.SeedSequence([seed, rank, 0x9DE]).generate_state(2, np.uint64)
    torch.manual_seed(int(state[0] >> 1))
    np.random.seed(int(state[1] % (2**32)))  # noqa: NPY002 - the global generator is what is being seeded
    random.seed(int(state[1]))


def _fault_hook(rank: int, generation: int, writer: ckpt.BackgroundWriter | None = None) -> None:
    """Test hook (see the module docstring): kill or freeze this rank at the start of a chosen generation, after its
    checkpoint of the previous generation has landed (so where the crash falls is deterministic)."""
    r, g = os.environ.get(FAULT_RANK_ENV), os.environ.get(FAULT_GENERATION_ENV)
    if r is None or g is None:
        return
    if int(r) == rank and int(g) == generation:
        if writer is not None:
            writer.join()
        sys.stdout.flush()
        sys.stderr.flush()
        if os.environ.get(FAULT_MODE_ENV, "exit") == "hang":
            while True:  # a stuck rank: alive, connections open, never reaching the next collective
                time.sleep(60)
        os._exit(FAULT_EXIT_CODE)


def _sync(ctx: DistContext) -> None:
    if ctx.device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(ctx.device)


def _fingerprint(config: TrainConfig, ctx: DistContext) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: everything that changes the trajectory (not the budget)."""
    c = config.model_dump(mode="json")
    return {
        "model": c["model"],
        "model_params": c["model_params"],
        "data": c["data"],
        "optim": c["optim"],
        "parallel_de": c["parallel_de"],
        "seed": c["seed"],
        "world_size": ctx.world_size,
    }


def _diff_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def train_parallel_de(
    config: TrainConfig, task: Task, ctx: DistContext, *, progress: Progress | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train ``task``'s network with Parallel_DE on this rank (call it on every rank of ``ctx``).

    Budget: ``budget.steps`` local optimizer steps per individual in total, i.e. ``steps // local_steps``
    generations; with ``budget.wall_clock_s`` the ranks stop together at the first generation boundary after it
    (agreed through a collective). Checkpoints after every generation under ``{out}/checkpoints``; with
    ``config.resume`` a restarted run continues from the newest generation all ranks hold and ends bit-identical to
    an uninterrupted run. A failed peer raises :class:`~l2vol.training.dist.PeerFailure` naming the generation
    within ``config.timeout_s``.

    Returns the network chosen on validation data (identical on every rank) and the history dict: one record per
    generation (``best``/``median`` fitness, ``diversity``, ``accepted``, ``mean_F``/``mean_CR``, ``train_s`` /
    ``comm_s`` / ``de_s``), totals under ``timings`` and the final choice under ``final``.
    """
    import torch

    from l2vol.training.de import MIN_POP, DifferentialEvolution

    pde = config.parallel_de
    ipr, k, ws, rank = pde.individuals_per_rank, pde.local_steps, ctx.world_size, ctx.rank
    pop_size = ws * ipr
    need = max(MIN_POPULATION, MIN_POP[pde.de.strategy])
    if pop_size < need:
        raise ValueError(
            f"parallel_de: population = world_size {ws} x individuals_per_rank {ipr} = {pop_size}, but DE needs at "
            f"least {need} individuals: raise parallel_de.individuals_per_rank to {math.ceil(need / ws)}"
        )
    generations = config.budget.steps // k
    if generations < 1:
        raise ValueError(
            f"parallel_de: budget.steps={config.budget.steps} is less than parallel_de.local_steps={k}: "
            "not one generation fits the budget"
        )
    timeout = float(config.timeout_s)
    progress = ensure(progress)
    run_start = time.perf_counter()

    def collective(what: str, gen: int | None, fn, *args):
        where = f"Parallel_DE rank {rank}/{ws}" + (f", generation {gen}" if gen is not None else "")
        return guarded(f"{where}: {what}", lambda: fn(ctx, *args), timeout_s=timeout)

    seed_process_rngs(config.seed, rank)  # dropout masks; a resumed run restores the checkpointed states instead
    base = task.build_module(config.seed).to(ctx.device)
    collective("broadcast of the initial network from rank 0", None, broadcast_module_state, base)
    codec = StateCodec(base)
    individuals = [copy.deepcopy(base) for _ in range(ipr)]
    optimizers = [task.make_optimizer(m) for m in individuals]
    warmup = pde.reset_warmup_steps
    since_reset = [warmup] * ipr  # steps since each individual's optimizer was reset (the initial ones: no ramp)
    scratch = copy.deepcopy(base)  # trials are scored in this copy
    de = DifferentialEvolution(
        pde.de, pop_size=pop_size, dim=codec.dim, seed=config.seed, device=ctx.device, dtype=codec.dtype
    )
    mine = range(rank * ipr, (rank + 1) * ipr)
    fingerprint = _fingerprint(config, ctx)

    history: dict[str, Any] = {
        "algorithm": "parallel_de",
        "world_size": ws,
        "individuals_per_rank": ipr,
        "population": pop_size,
        "local_steps": k,
        "dim": codec.dim,
        "generations_planned": generations,
        "generations": [],
        "resumed_from": None,
        "stopped": None,
    }
    totals = {"train_s": 0.0, "comm_s": 0.0, "de_s": 0.0, "checkpoint_s": 0.0}
    elite_vec: torch.Tensor | None = None
    elite = {"fitness": math.inf, "generation": None}
    last_fit: torch.Tensor | None = None
    start_gen, prior_elapsed = 0, 0.0

    # ------------------------------------------------------------------ resume
    resume_gen = -1
    if config.resume:
        mine_gens = ckpt.list_generations(config.out, rank)
        latest = torch.tensor([float(mine_gens[-1]) if mine_gens else -1.0], dtype=torch.float64, device=ctx.device)
        every = collective("agreeing on the checkpoint to resume", None, all_gather_flat, latest)
        resume_gen = int(every.min().item())
        if resume_gen >= 0 and resume_gen not in mine_gens:
            raise ValueError(
                f"Parallel_DE rank {rank}: the ranks' newest checkpoints are generations {every.flatten().tolist()}, "
                f"but this rank no longer holds generation {resume_gen} under {config.out}/checkpoints/rank{rank}"
            )
    if resume_gen >= 0:
        state = ckpt.load(config.out, rank, resume_gen)  # on CPU: generator states must stay there
        diff = _diff_keys(state["fingerprint"], fingerprint)
        if diff:
            raise ValueError(
                f"{config.out}/checkpoints/rank{rank}: checkpoint of generation {resume_gen} was written by a run "
                f"with different {diff}; use a new out directory or resume: false"
            )
        for m, sd in zip(individuals, state["modules"], strict=True):
            m.load_state_dict(sd)
        for opt, sd in zip(optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(sd)
        since_reset = [int(v) for v in state.get("since_reset", since_reset)]  # absent: written without a ramp
        de.load_state_dict(state["de"])
        elite_vec = None if state["elite_vec"] is None else state["elite_vec"].to(ctx.device)
        elite = dict(state["elite"])
        last_fit = state["fitness"]
        history = state["history"]
        totals = dict(state["totals"])
        prior_elapsed = float(state["elapsed_s"])
        history["resumed_from"] = resume_gen
        history["generations_planned"] = generations
        if history["stopped"] == "budget" and resume_gen < generations:
            history["stopped"] = None  # the budget was raised since: continue
        start_gen = resume_gen
        ckpt.set_rng_state(state["rng"])  # last: nothing above may consume the generators
    else:
        ckpt.clear(config.out, rank)

    progress.task("parallel_de", generations)
    if start_gen:
        progress.advance("parallel_de", start_gen, f"resumed after generation {start_gen}")

    # --------------------------------------------------------------- generations
    # Checkpoints are written by a background thread while the next generation trains. The pending write is joined
    # before this rank's first collective of the next generation: so when any rank starts writing generation G + 1,
    # every rank's file of generation G is on disk, and the newest generation all ranks hold is never pruned.
    writer = ckpt.BackgroundWriter()
    gen = start_gen
    try:
        while gen < generations and history["stopped"] is None:
            _fault_hook(rank, gen, writer)
            t0 = time.perf_counter()
            for i, (m, opt) in enumerate(zip(individuals, optimizers, strict=True)):
                for s in range(k):
                    if since_reset[i] < warmup:  # a fresh optimizer ramps its learning rate up (see the docs)
                        for group in opt.param_groups:
                            group["lr"] = config.optim.lr * (since_reset[i] + 1) / (warmup + 1)
                    elif since_reset[i] == warmup and warmup:
                        for group in opt.param_groups:
                            group["lr"] = config.optim.lr
                    batch = task.train_batch(rank=rank, world_size=ws, stream=i, step=gen * k + s)
                    task.train_step(m, opt, batch)
                    since_reset[i] += 1
            _sync(ctx)
            t_join = time.perf_counter()
            writer.join()  # the previous generation's checkpoint, written while this one trained (see above)
            t1 = time.perf_counter()
            totals["checkpoint_s"] += t1 - t_join
            fbatch = task.fitness_batch(gen)
            local_fit = torch.tensor([task.fitness(m, fbatch) for m in individuals], dtype=torch.float64)
            _sync(ctx)
            totals["target_fitness_s"] = totals.get("target_fitness_s", 0.0) + time.perf_counter() - t1
            local_states = torch.stack([codec.flatten(m) for m in individuals])
            _sync(ctx)
            t2 = time.perf_counter()
            # One collective: each state row carries its fitness's float64 bits (exact) in extra columns.
            rows = collective("all-gather of states", gen, all_gather_flat, _with_bits(local_states, local_fit))
            pop, fit = _split_bits(rows.reshape(pop_size, -1), codec.dim)
            _sync(ctx)
            t3 = time.perf_counter()
            trials = codec.repair(de.ask(pop, fit))  # BatchNorm running variances floored at eps
            local_trial_fit = []
            for j in mine:
                codec.load(scratch, trials[j])
                local_trial_fit.append(task.fitness(scratch, fbatch))
            # The elite is re-scored on this generation's subsample, so that it is compared with the population on
            # the same rows, as targets and trials are: fitness values of different subsamples are not comparable (an
            # easy subsample would otherwise crown its generation's best for good). The ranks share the work: chunk c
            # of the subsample is scored on rank (c + gen) mod world size (a one-chunk subsample by each rank in turn),
            # so with several chunks no rank waits in the collective below for one rank's whole extra evaluation. The
            # chunk sums travel in that collective; their sum in chunk order is bit for bit one rank's fitness.
            n_chunks = task.fitness_chunks(fbatch)
            elite_parts = [0.0] * n_chunks
            if elite_vec is not None:
                codec.load(scratch, elite_vec)
                elite_parts = task.fitness_parts(scratch, fbatch, part=(rank - gen) % ws, parts=ws)
            # The wall-clock stop is agreed in the same collective: a rank over budget sends 1 (max over ranks).
            over = 0.0
            if config.budget.wall_clock_s is not None:
                over = float(prior_elapsed + (time.perf_counter() - run_start) >= config.budget.wall_clock_s)
            local_tfit = torch.tensor([*local_trial_fit, *elite_parts, over], dtype=torch.float64, device=ctx.device)
            _sync(ctx)
            t4 = time.perf_counter()
            gathered = collective("all-gather of trial fitness", gen, all_gather_flat, local_tfit)
            gathered = gathered.reshape(ws, ipr + n_chunks + 1).cpu()
            tfit = gathered[:, :ipr].reshape(pop_size)
            stop = "wall_clock" if float(gathered[:, ipr + n_chunks].max()) > 0 else None
            t5 = time.perf_counter()
            new_pop, new_fit, accepted = de.tell(pop, fit, trials, tfit)
            for i, j in enumerate(mine):
                if bool(accepted[j]):
                    codec.load(individuals[i], trials[j])
                    optimizers[i] = task.make_optimizer(individuals[i])  # moments of the old point do not apply
                    since_reset[i] = 0
            b = int(torch.argsort(new_fit, stable=True)[0])
            if elite_vec is not None:  # the elite on this generation's rows
                chunk_sums = gathered[:, ipr : ipr + n_chunks].sum(dim=0)  # one rank's value + zeros: exact
                elite["fitness"] = task.fitness_of_parts([float(v) for v in chunk_sums], fbatch)
            if float(new_fit[b]) < elite["fitness"]:
                elite_vec = new_pop[b].clone()
                elite = {"fitness": float(new_fit[b]), "generation": gen}
            diversity = population_diversity(new_pop, codec.param_mask)
            last_fit = new_fit
            _sync(ctx)
            t6 = time.perf_counter()

            train_s, comm_s, de_s = t_join - t0, (t3 - t2) + (t5 - t4), (t2 - t1) + (t4 - t3) + (t6 - t5)
            for key, v in (("train_s", train_s), ("comm_s", comm_s), ("de_s", de_s)):
                totals[key] += v
            sf = new_fit[torch.isfinite(new_fit)]
            history["generations"].append(
                {
                    "generation": gen,
                    "step": (gen + 1) * k,
                    "best": float(new_fit.min()),
                    "median": float(sf.median()) if sf.numel() else math.inf,
                    "diversity": diversity,
                    "accepted": int(accepted.sum()),
                    "mean_F": de.last_stats.get("mean_F", math.nan),
                    "mean_CR": de.last_stats.get("mean_CR", math.nan),
                    "elite": elite["fitness"],
                    "train_s": train_s,
                    "comm_s": comm_s,
                    "de_s": de_s,
                    "elapsed_s": prior_elapsed + (t6 - run_start),
                }
            )
            gen += 1
            if stop is None and gen >= generations:
                stop = "budget"
            history["stopped"] = stop
            t8 = time.perf_counter()
            writer.submit(  # copies the state now; serialization and the atomic write run in the background
                config.out,
                rank,
                gen,
                {
                    "fingerprint": fingerprint,
                    "modules": [m.state_dict() for m in individuals],
                    "optimizers": [o.state_dict() for o in optimizers],
                    "since_reset": list(since_reset),
                    "de": de.state_dict(),
                    "elite_vec": elite_vec,
                    "elite": elite,
                    "fitness": new_fit,
                    "history": history,
                    "totals": totals,
                    "elapsed_s": prior_elapsed + (time.perf_counter() - run_start),
                    "rng": ckpt.rng_state(),
                },
            )
            totals["checkpoint_s"] += time.perf_counter() - t8
            progress.advance(
                "parallel_de",
                1,
                f"generation {gen}/{generations}: best {float(new_fit.min()):.4g}, accepted "
                f"{int(accepted.sum())}/{pop_size}",
            )

    except BaseException as exc:
        try:
            writer.close()  # let the last checkpoint land: a restart resumes from it
        except ckpt.CheckpointWriteError as write_error:
            exc.add_note(str(write_error))
        raise
    t_final = time.perf_counter()
    writer.close()  # before _choose_final's collectives; the run's last checkpoint is on disk when it returns
    totals["checkpoint_s"] += time.perf_counter() - t_final

    module, final = _choose_final(task, ctx, codec, individuals, elite_vec, elite, last_fit, collective)
    totals["total_s"] = prior_elapsed + (time.perf_counter() - run_start)
    history["timings"] = totals
    history["steps"] = len(history["generations"]) * k  # local optimizer steps each individual took
    history["final_diversity"] = history["generations"][-1]["diversity"] if history["generations"] else None
    history["elite"] = elite
    history["final"] = final
    return module, history


def _with_bits(states: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``states`` (n, D) with the exact bits of the float64 ``values`` (n,) appended as extra columns of the states'
    dtype (float32: 2 columns, float64: 1), so one all-gather carries both; :func:`_split_bits` undoes it."""
    import torch

    v = values.detach().to(states.device, torch.float64).reshape(-1, 1).contiguous()
    if states.dtype == torch.float64:
        return torch.cat([states, v], dim=1)
    width = 8 // states.element_size()
    return torch.cat([states, v.view(states.dtype).reshape(-1, width)], dim=1)


def _split_bits(rows: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The states ``(P, dim)`` and the float64 values (on the CPU) of rows built by :func:`_with_bits`."""
    import torch

    values = rows[:, dim:].contiguous().view(torch.float64).reshape(-1).cpu()
    return rows[:, :dim].contiguous(), values


def _choose_final(task, ctx, codec, individuals, elite_vec, elite, fitness, collective):
    """The network with the lowest full-validation loss among the elite and the best individuals of the last
    generation. Candidates are scored round-robin across ranks and the losses all-gathered, so every rank picks
    the same one (ties go to the earlier candidate: the elite first). Non-floating buffers (step counters) come
    from the individuals, which all hold the same ones."""
    import torch

    candidates: list[tuple[str, torch.Tensor]] = []
    if elite_vec is not None:
        candidates.append((f"elite (generation {elite['generation']})", elite_vec))
    if fitness is not None:
        local = torch.stack([codec.flatten(m) for m in individuals])
        population = collective("all-gather of the final population", None, all_gather_flat, local)
        population = population.reshape(-1, codec.dim)
        for j in torch.argsort(fitness, stable=True)[:FINAL_CANDIDATES].tolist():
            if not any(torch.equal(population[j], v) for _, v in candidates):
                candidates.append((f"individual {j} of the last generation", population[j]))
    if not candidates:
        raise RuntimeError("Parallel_DE finished without any generation: nothing to choose from")
    n = len(candidates)
    module = copy.deepcopy(individuals[0])
    local = torch.full((n,), math.nan, dtype=torch.float64, device=ctx.device)
    for c in range(ctx.rank, n, ctx.world_size):
        codec.load(module, candidates[c][1])
        local[c] = task.evaluate(module, "val")["loss"]
    gathered = collective("all-gather of the final validation losses", None, all_gather_flat, local)
    losses = gathered.cpu()[torch.arange(n) % ctx.world_size, torch.arange(n)]  # candidate c was scored on rank c % ws
    losses = torch.where(torch.isfinite(losses), losses, torch.full_like(losses, math.inf))
    best = int(torch.argsort(losses, stable=True)[0])
    codec.load(module, candidates[best][1])
    module.eval()
    return module, {
        "chosen": candidates[best][0],
        "val_loss": float(losses[best]),
        "candidates": [
            {"name": name, "val_loss": float(v)} for (name, _), v in zip(candidates, losses.tolist(), strict=True)
        ],
    }


def plot_history(history: dict[str, Any], path: str) -> str:
    """Convergence (best and median fitness per generation) and population diversity, as a PNG at ``path``.

    Written to a temporary file and renamed, so a reader never sees a half-written image. Returns ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = history.get("generations") or []
    if not recs:
        raise ValueError("plot_history: the history has no generation to plot")
    steps = [r["step"] for r in recs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(steps, [r["best"] for r in recs], label="best")
    ax1.plot(steps, [r["median"] for r in recs], label="median")
    ax1.set_xlabel("local optimizer steps per individual")
    ax1.set_ylabel("validation-subsample fitness (MSE, std. log target)")
    ax1.set_title(f"Parallel_DE convergence (P={history.get('population')})")
    ax1.legend()
    ax2.plot(steps, [r["diversity"] for r in recs], color="tab:green")
    ax2.set_xlabel("local optimizer steps per individual")
    ax2.set_ylabel("mean pairwise parameter distance (L2)")
    ax2.set_title("population diversity")
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp.{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m l2vol.training.parallel_de --config FILE``: the training harness with Parallel_DE."""
    parser = argparse.ArgumentParser(prog="python -m l2vol.training.parallel_de", description=main.__doc__)
    parser.add_argument("--config", required=True, help="training config (YAML, l2vol.training.config.TrainConfig)")
    args = parser.parse_args(argv)
    from l2vol.training.config import load_train_config
    from l2vol.training.harness import run

    config = load_train_config(args.config).model_copy(update={"algorithm": "parallel_de"})
    try:
        run(config)
    except PeerFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from l2vol.training.dist import exit_process

    exit_process(main())
