"""The baselines Parallel_DE is compared with in one harness (DESIGN §6): single process, DDP and local SGD.

All three have the signature of :func:`l2vol.training.parallel_de.train_parallel_de`,
``(config, task, ctx, *, progress=None) -> (module, history)``, and share with it the data (each rank its shard of
the training rows, :meth:`Task.train_batch`), the model and its initialization (``task.build_module(config.seed)``,
broadcast from rank 0), the optimizer, the step budget (``budget.steps`` local optimizer steps per worker, or
``budget.wall_clock_s`` checked at every history point, all ranks stopping together) and the seeds.

* ``single``: one process trains on all training rows.
* ``ddp``: :class:`torch.nn.parallel.DistributedDataParallel`; every step all-reduces (averages) the gradients, so
  the ranks stay identical. The all-reduce runs in a communication hook that waits for it and times it (this gives
  up DDP's overlap of communication with the backward pass, negligible on CPU/gloo, and makes the communication
  time measurable).
* ``local_sgd``: each rank trains its own copy; every ``local_sgd.sync_every`` steps all floating-point parameters
  AND buffers are averaged with ``all_reduce`` (one flat buffer); optimizer moments stay local.

History: one point per ``budget.eval_every`` steps (default ``parallel_de.local_steps``, the DE generation length;
local SGD: at each averaging) with the validation fitness (MSE of the standardized log target on the fixed
validation subsample ``task.fitness_batch(0)``), the mean training loss since the previous point, and cumulative
seconds of training, communication and evaluation. The returned module is the history point with the best
validation fitness (chosen on validation data only, like Parallel_DE's elite); ``history["selected_step"]`` says
which. ``final_diversity``: local SGD, the mean pairwise L2 distance between the ranks' parameter vectors just
before the last averaging; single and DDP hold one model (0).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from l2vol.progress import Progress, ensure

if TYPE_CHECKING:
    import torch

    from l2vol.training.config import TrainConfig
    from l2vol.training.dist import DistContext
    from l2vol.training.task import Task


def mean_pairwise_distance(flat: torch.Tensor) -> float:
    """Mean L2 distance over all pairs of rows of ``flat`` (P, D); 0 for a single row."""
    import torch

    p = flat.shape[0]
    if p < 2:
        return 0.0
    return float(torch.pdist(flat.detach().to(torch.float64)).mean())


def flat_parameters(module: torch.nn.Module) -> torch.Tensor:
    import torch

    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def _float_state(module: torch.nn.Module) -> list[torch.Tensor]:
    """The floating-point parameters and buffers (e.g. BatchNorm running statistics); integer counters excluded."""
    return [t for t in module.state_dict().values() if t.is_floating_point()]


class _Clock:
    """Cumulative seconds per phase; CUDA work is synchronized before reading the clock."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.seconds = {"train": 0.0, "comm": 0.0, "eval": 0.0, "diag": 0.0}
        self.start = time.perf_counter()

    def now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


class _Runner:
    """The loop shared by the baselines: steps, history points, wall-clock stop and model choice on validation."""

    def __init__(self, name: str, config: TrainConfig, task: Task, ctx: DistContext, progress: Progress | None):
        self.name, self.config, self.task, self.ctx = name, config, task, ctx
        self.progress = ensure(progress) if ctx.is_main else ensure(None)
        self.clock = _Clock(ctx.device)
        self.history: list[dict[str, Any]] = []
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        self.fitness_batch = task.fitness_batch(0)
        self.losses: list[float] = []

    def point(self, module: torch.nn.Module, step: int, **extra: Any) -> bool:
        """Record a history point; returns True when the wall-clock budget says stop (agreed by all ranks)."""
        from l2vol.training.dist import all_reduce_max

        t0 = self.clock.now()
        fit = self.task.fitness(module, self.fitness_batch)
        t1 = self.clock.now()
        self.clock.seconds["eval"] += t1 - t0
        if self.best is None or fit < self.best[0]:
            state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            self.best = (fit, step, state)
        s = self.clock.seconds
        row = {
            "step": step,
            "fitness": fit,
            "train_loss": sum(self.losses) / len(self.losses) if self.losses else None,
            "elapsed_s": self.clock.elapsed(),
            "train_s": s["train"],
            "comm_s": s["comm"],
            "eval_s": s["eval"],
            **extra,
        }
        self.history.append(row)
        self.losses = []
        self.progress.advance(self.name, 0, f"step {step} val {fit:.4f}")
        budget = self.config.budget.wall_clock_s
        want_stop = 1.0 if budget is not None and self.clock.elapsed() >= budget else 0.0
        t2 = self.clock.now()
        stop = all_reduce_max(self.ctx, want_stop) > 0  # every rank stops at the same point
        s["comm"] += self.clock.now() - t2
        return stop

    def result(self, module: torch.nn.Module, steps: int, final_diversity: float, note: str, **extra: Any):
        assert self.best is not None
        fit, step, state = self.best
        chosen = copy.deepcopy(module)
        chosen.load_state_dict(state)
        chosen.eval()
        s = self.clock.seconds
        wall = self.clock.elapsed()
        history = {
            "algorithm": self.name,
            "world_size": self.ctx.world_size,
            "points": self.history,
            "steps": steps,
            "selected_step": step,
            "selected_fitness": fit,
            "final_diversity": final_diversity,
            "diversity_note": note,
            "timings": {
                "wall_s": wall,
                "train_s": s["train"],
                "comm_s": s["comm"],
                "de_s": 0.0,
                "eval_s": s["eval"],
                "diag_s": s["diag"],
                "comm_share": s["comm"] / wall if wall > 0 else 0.0,
                "de_share": 0.0,
            },
            **extra,
        }
        return chosen, history


def _budget(config: TrainConfig) -> tuple[int, int]:
    every = config.budget.eval_every or config.parallel_de.local_steps
    return int(config.budget.steps), int(every)


def _initial_module(task: Task, config: TrainConfig, ctx: DistContext) -> torch.nn.Module:
    from l2vol.training.dist import broadcast_module_state, guarded

    module = task.build_module(config.seed)
    guarded("broadcast of the initial model", lambda: broadcast_module_state(ctx, module), timeout_s=config.timeout_s)
    return module


def _train_steps(
    runner: _Runner,
    module: torch.nn.Module,
    opt: torch.optim.Optimizer,
    *,
    rank: int,
    world_size: int,
    start: int,
    stop: int,
    step_fn: Callable[[], None] | None = None,
) -> None:
    """Optimizer steps ``start..stop-1`` of stream 0 on ``rank``'s shard, timed as training."""
    task = runner.task
    for step in range(start, stop):
        t0 = runner.clock.now()
        batch = task.train_batch(rank=rank, world_size=world_size, stream=0, step=step)
        runner.losses.append(task.train_step(module, opt, batch))
        runner.clock.seconds["train"] += runner.clock.now() - t0
        if step_fn is not None:
            step_fn()


def train_single(config: TrainConfig, task: Task, ctx: DistContext, *, progress: Progress | None = None):
    """One process, all training rows, ``budget.steps`` optimizer steps (see the module docstring)."""
    if ctx.world_size > 1:
        raise ValueError(
            f"algorithm 'single' trains in one process but WORLD_SIZE={ctx.world_size}: launch it with one process "
            "(or use ddp / local_sgd / parallel_de)"
        )
    runner = _Runner("single", config, task, ctx, progress)
    steps, every = _budget(config)
    runner.progress.task("single", steps)
    module = _initial_module(task, config, ctx)
    opt = task.make_optimizer(module)
    runner.point(module, 0)
    done = 0
    while done < steps:
        nxt = min(done + every, steps)
        _train_steps(runner, module, opt, rank=0, world_size=1, start=done, stop=nxt)
        runner.progress.advance("single", nxt - done)
        done = nxt
        if runner.point(module, done):
            break
    return runner.result(module, done, 0.0, "one model: no population")


def train_ddp(config: TrainConfig, task: Task, ctx: DistContext, *, progress: Progress | None = None):
    """DistributedDataParallel: each rank steps on its shard with the gradients averaged over all ranks."""
    import torch

    runner = _Runner("ddp", config, task, ctx, progress)
    steps, every = _budget(config)
    runner.progress.task("ddp", steps)
    module = _initial_module(task, config, ctx)
    model: torch.nn.Module = module
    if ctx.is_distributed:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [torch.device(ctx.device).index] if ctx.device.startswith("cuda") else None
        # Buffers (TabNet's BatchNorm statistics) follow rank 0 at every forward; parameters that never get a
        # gradient (pytorch-tabnet's TabNet keeps an unused BatchNorm) need DDP's unused-parameter detection.
        model = DistributedDataParallel(
            module,
            device_ids=device_ids,
            find_unused_parameters=bool(unused_parameters(task, module)),
            **_sync_buffers_kwarg(),
        )
        world = ctx.world_size
        clock = runner.clock

        def timed_allreduce(_state, bucket):
            t0 = clock.now()
            tensor = bucket.buffer().div_(world)
            dist.all_reduce(tensor)
            clock.seconds["comm"] += clock.now() - t0
            fut: torch.futures.Future = torch.futures.Future()
            fut.set_result(tensor)
            return fut

        model.register_comm_hook(None, timed_allreduce)
    opt = task.make_optimizer(module)
    # The forward pass of DDP wraps the module; the task's loss calls module(*inputs), so pass the wrapper.
    runner.point(module, 0)
    done = 0
    while done < steps:
        nxt = min(done + every, steps)
        t_comm0 = runner.clock.seconds["comm"]
        t0 = runner.clock.now()
        for step in range(done, nxt):
            batch = task.train_batch(rank=ctx.rank, world_size=ctx.world_size, stream=0, step=step)
            runner.losses.append(task.train_step(module, opt, batch, model=model))
        # Training time excludes the all-reduce time measured inside the hook.
        runner.clock.seconds["train"] += runner.clock.now() - t0 - (runner.clock.seconds["comm"] - t_comm0)
        runner.progress.advance("ddp", nxt - done)
        done = nxt
        if runner.point(module, done):
            break
    return runner.result(module, done, 0.0, "ranks hold identical models (gradients all-reduced every step)")


def unused_parameters(task: Task, module: torch.nn.Module) -> list[str]:
    """Names of the parameters that get no gradient from the training loss (probed on a copy, one batch)."""
    probe = copy.deepcopy(module)
    probe.train()
    task.loss(probe, task.train_batch(rank=0, world_size=1, stream=0, step=0)).backward()
    return [name for name, p in probe.named_parameters() if p.requires_grad and p.grad is None]


def _sync_buffers_kwarg() -> dict[str, bool]:
    """Buffer sync at every forward: ``forward_sync_buffers`` on torch versions that have it, else the older
    ``broadcast_buffers``."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": True} if "forward_sync_buffers" in params else {"broadcast_buffers": True}


def train_local_sgd(config: TrainConfig, task: Task, ctx: DistContext, *, progress: Progress | None = None):
    """Local SGD: every rank trains its own copy; parameters and floating buffers averaged every ``sync_every``."""
    from l2vol.training.dist import all_gather_flat, guarded

    runner = _Runner("local_sgd", config, task, ctx, progress)
    steps = int(config.budget.steps)
    every = int(config.local_sgd.sync_every)
    runner.progress.task("local_sgd", steps)
    module = _initial_module(task, config, ctx)
    opt = task.make_optimizer(module)
    runner.point(module, 0, diversity=0.0)
    done, diversity, syncs = 0, 0.0, 0
    while done < steps:
        nxt = min(done + every, steps)
        _train_steps(runner, module, opt, rank=ctx.rank, world_size=ctx.world_size, start=done, stop=nxt)
        runner.progress.advance("local_sgd", nxt - done)
        done = nxt
        # Diversity of the rank models before averaging (a diagnostic: its all-gather is not counted as comm).
        t0 = runner.clock.now()
        flat = guarded(
            f"local_sgd step {done}: all-gather of parameters",
            lambda: all_gather_flat(ctx, flat_parameters(module)),
            timeout_s=config.timeout_s,
        )
        diversity = mean_pairwise_distance(flat)
        runner.clock.seconds["diag"] += runner.clock.now() - t0
        t0 = runner.clock.now()
        guarded(f"local_sgd step {done}: averaging", lambda: average_state(ctx, module), timeout_s=config.timeout_s)
        runner.clock.seconds["comm"] += runner.clock.now() - t0
        syncs += 1
        if runner.point(module, done, diversity=diversity):
            break
    return runner.result(
        module, done, diversity, "mean pairwise distance of the rank models before the last averaging", syncs=syncs
    )


def average_state(ctx: DistContext, module: torch.nn.Module) -> None:
    """Average every floating-point parameter and buffer of ``module`` over the ranks, in place (one all-reduce
    of a flat buffer). Integer buffers (BatchNorm step counters) are left as they are."""
    if not ctx.is_distributed:
        return
    import torch
    import torch.distributed as dist

    tensors = _float_state(module)
    with torch.no_grad():
        flat = torch.cat([t.reshape(-1).to(torch.float32) for t in tensors])
        dist.all_reduce(flat)
        flat /= ctx.world_size
        i = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[i : i + n].view_as(t))
            i += n


ALGORITHMS: dict[str, Callable[..., Any]] = {
    "single": train_single,
    "ddp": train_ddp,
    "local_sgd": train_local_sgd,
}
