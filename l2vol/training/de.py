"""Differential evolution (DE) over real vectors held as torch tensors (DESIGN §6).

Pure: no I/O, no distributed code. The Parallel_DE driver uses :class:`DifferentialEvolution` through ``ask`` /
``tell`` on flattened model states; :func:`minimize` is the plain loop used for black-box tuning
(:mod:`l2vol.training.tune`) and tests. Importing this module imports no torch (configs load light); the functions
import it when called.

Conventions (see docs/de.md for the formulas):

* A population is a ``(P, D)`` tensor, fitness a ``(P,)`` tensor; lower is better. Device and dtype of the trials
  follow the population passed to :meth:`DifferentialEvolution.ask`.
* Every random number comes from the object's own CPU ``torch.Generator`` (seeded in the constructor) and is moved
  to the population's device afterwards, so two objects (e.g. on two ranks) with the same seed and the same inputs
  produce identical trials, and :meth:`state_dict` / :meth:`load_state_dict` resume bit-identically.
* NaN or infinite fitness is treated as ``+inf`` (worst): a diverged individual is replaced by any finite trial,
  and a NaN trial never replaces a finite target.
* Selection is greedy: the trial replaces its target iff ``f(trial) <= f(target)``. Hence no individual ever gets
  worse and the best individual is never lost (elitism without an extra copy).
* With bounds, mutant components outside ``[lo, hi]`` are repaired before crossover: ``"midpoint"`` (default,
  JADE) moves them half-way between the violated bound and the parent's component; ``"reflect"`` mirrors them at the
  bound; ``"clip"`` clamps them. The result is always clamped into the bounds, so trials are always feasible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from l2vol.config import StrictModel

if TYPE_CHECKING:  # torch is imported where it is used: loading DEConfig stays light
    import torch
    from torch import Tensor

Strategy = Literal["rand/1/bin", "best/1/bin", "current-to-best/1/bin"]
Adaptation = Literal["none", "jade", "shade"]

# Smallest population per strategy: the target plus the distinct individuals the mutation draws from the population.
MIN_POP: dict[str, int] = {"rand/1/bin": 4, "best/1/bin": 3, "current-to-best/1/bin": 3}
_SIGMA_CR = 0.1  # std of the normal CR_i ~ N(mu_CR, 0.1) (JADE, SHADE)
_GAMMA_F = 0.1  # scale of the Cauchy F_i ~ C(mu_F, 0.1) (JADE, SHADE)
_MAX_REDRAW = 1000  # bound on redraws of non-positive Cauchy F_i (probability of needing more is negligible)


class DEConfig(StrictModel):
    """Hyperparameters of the DE step (mutation strategy, F/CR adaptation, archive)."""

    strategy: Strategy = Field(
        "current-to-best/1/bin",
        description="mutation; with jade/shade adaptation current-to-best becomes JADE's current-to-pbest/1",
    )
    adaptation: Adaptation = Field("shade", description="none: fixed F/CR; jade: mean adaptation; shade: memory")
    F: float = Field(0.5, ge=0.0, le=2.0, description="scale factor; with adaptation the initial mean mu_F")
    CR: float = Field(0.9, ge=0.0, le=1.0, description="crossover rate; with adaptation the initial mean mu_CR")
    memory_size: int = Field(5, ge=1, le=1000, description="SHADE success-history length H")
    archive: bool = Field(True, description="external archive of replaced parents (jade/shade only); size P")
    p_best: float = Field(0.2, gt=0.0, le=1.0, description="fraction of the best used by current-to-pbest")
    c: float = Field(0.1, gt=0.0, le=1.0, description="JADE learning rate of mu_F and mu_CR")
    bounds_repair: Literal["midpoint", "reflect", "clip"] = Field(
        "midpoint", description="how mutant components outside the bounds are brought back"
    )


def sanitize_fitness(fitness: Tensor) -> Tensor:
    """Fitness as a float64 CPU tensor with NaN and +/-inf replaced by +inf (a diverged individual is the worst)."""
    import torch

    f = fitness.detach().to("cpu", torch.float64)
    return torch.where(torch.isfinite(f), f, torch.full_like(f, math.inf))


def _as_bounds(bounds: Any, dim: int) -> tuple[Tensor, Tensor] | None:
    import torch

    if bounds is None:
        return None
    try:
        lo_raw, hi_raw = bounds
    except (TypeError, ValueError) as exc:
        raise ValueError("bounds must be a pair (lower, upper)") from exc
    lo = torch.as_tensor(lo_raw, dtype=torch.float64).flatten().cpu()
    hi = torch.as_tensor(hi_raw, dtype=torch.float64).flatten().cpu()
    if lo.numel() == 1:
        lo = lo.expand(dim).clone()
    if hi.numel() == 1:
        hi = hi.expand(dim).clone()
    if lo.numel() != dim or hi.numel() != dim:
        raise ValueError(f"bounds have {lo.numel()}/{hi.numel()} entries, expected dim={dim}")
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise ValueError("bounds must be finite")
    bad = (lo >= hi).nonzero().flatten()
    if bad.numel():
        j = int(bad[0])
        raise ValueError(f"bounds: lower >= upper at dimension {j} ({float(lo[j])} >= {float(hi[j])})")
    return lo, hi


def _lehmer(values: Tensor, weights: Tensor) -> float:
    """Weighted Lehmer mean sum(w v^2) / sum(w v) (biases F towards larger successful values)."""
    den = float((weights * values).sum())
    return float((weights * values * values).sum()) / den if den > 0 else float(values.mean())


class DifferentialEvolution:
    """One DE population's mutation/crossover (``ask``) and selection/adaptation (``tell``).

    The object holds no population, only its random generator, the F/CR memories and the archive; the caller owns
    the population and fitness, which keeps the distributed driver free to gather them however it likes.
    """

    def __init__(
        self,
        config: DEConfig,
        *,
        pop_size: int,
        dim: int,
        seed: int,
        bounds: tuple[Tensor, Tensor] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> None:
        import torch

        if not isinstance(config, DEConfig):
            config = DEConfig.model_validate(config)
        need = MIN_POP[config.strategy]
        if pop_size < need:
            raise ValueError(f"strategy {config.strategy} needs pop_size >= {need}, got {pop_size}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.config = config
        self.pop_size = int(pop_size)
        self.dim = int(dim)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.dtype = torch.float32 if dtype is None else dtype
        self.bounds = _as_bounds(bounds, self.dim)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(self.seed)
        self.mu_F = float(config.F)
        self.mu_CR = float(config.CR)
        self.memory_F = torch.full((config.memory_size,), float(config.F), dtype=torch.float64)
        self.memory_CR = torch.full((config.memory_size,), float(config.CR), dtype=torch.float64)
        self.memory_pos = 0
        self.archive: Tensor | None = None  # (A, D) replaced parents, on the population's device
        self.generation = 0
        self._pending: dict[str, Tensor] | None = None  # F_i, CR_i of the last ask, consumed by tell
        self.last_stats: dict[str, float] = {}  # mean F/CR and acceptance rate of the last generation
        self.best_index: int | None = None  # index and fitness of the best individual after the last tell
        self.best_value: float = math.inf

    # ------------------------------------------------------------------ helpers
    @property
    def uses_archive(self) -> bool:
        return self.config.archive and self.config.adaptation != "none"

    def _rand(self, *shape: int) -> Tensor:
        import torch

        return torch.rand(shape, generator=self.generator, dtype=torch.float64)

    def _check(self, population: Tensor, fitness: Tensor, what: str = "population") -> Tensor:
        if population.ndim != 2 or tuple(population.shape) != (self.pop_size, self.dim):
            raise ValueError(f"{what} has shape {tuple(population.shape)}, expected ({self.pop_size}, {self.dim})")
        if not population.is_floating_point():
            raise ValueError(f"{what} must be a floating-point tensor, got {population.dtype}")
        if fitness.ndim != 1 or fitness.shape[0] != self.pop_size:
            raise ValueError(f"fitness of {what} has shape {tuple(fitness.shape)}, expected ({self.pop_size},)")
        return sanitize_fitness(fitness)

    def initial_population(self, *, scale: float = 1.0, center: Tensor | None = None) -> Tensor:
        """A ``(P, D)`` population: uniform within the bounds, else ``center + scale * N(0, 1)``.

        Draws from the object's generator, so it is part of the reproducible stream.
        """
        import torch

        if self.bounds is not None:
            lo, hi = self.bounds
            x = lo + self._rand(self.pop_size, self.dim) * (hi - lo)
        else:
            x = torch.randn((self.pop_size, self.dim), generator=self.generator, dtype=torch.float64) * scale
            if center is not None:
                x = x + center.detach().to("cpu", torch.float64).flatten()
        return x.to(self.device, self.dtype)

    def _sample_F_CR(self) -> tuple[Tensor, Tensor]:
        import torch

        P, cfg = self.pop_size, self.config
        if cfg.adaptation == "none":
            return torch.full((P,), cfg.F, dtype=torch.float64), torch.full((P,), cfg.CR, dtype=torch.float64)
        if cfg.adaptation == "jade":
            mu_F = torch.full((P,), self.mu_F, dtype=torch.float64)
            mu_CR = torch.full((P,), self.mu_CR, dtype=torch.float64)
        else:
            r = torch.randint(0, cfg.memory_size, (P,), generator=self.generator)
            mu_F, mu_CR = self.memory_F[r], self.memory_CR[r]
        CR = (mu_CR + _SIGMA_CR * torch.randn((P,), generator=self.generator, dtype=torch.float64)).clamp(0.0, 1.0)
        F = mu_F + _GAMMA_F * torch.tan(math.pi * (self._rand(P) - 0.5))
        for _ in range(_MAX_REDRAW):  # Cauchy draws <= 0 are redrawn, > 1 truncated to 1 (JADE)
            bad = F <= 0
            if not bool(bad.any()):
                break
            F = torch.where(bad, mu_F + _GAMMA_F * torch.tan(math.pi * (self._rand(P) - 0.5)), F)
        else:
            F = torch.where(F <= 0, torch.full_like(F, 1e-3), F)
        return F.clamp(max=1.0), CR

    def _distinct(self, k: int) -> Tensor:
        """``(P, k)`` population indices, distinct per row and different from the row index."""
        P = self.pop_size
        keys = self._rand(P, P)
        keys.fill_diagonal_(2.0)
        return keys.argsort(dim=1)[:, :k]

    def _from_union(self, exclude: Tensor, n_archive: int) -> Tensor:
        """One index per row into population ∪ archive, avoiding the row itself and the ``(P, k)`` ``exclude``."""
        import torch

        P = self.pop_size
        keys = self._rand(P, P + n_archive)
        rows = torch.arange(P)
        keys[rows, rows] = 2.0
        for j in range(exclude.shape[1]):
            keys[rows, exclude[:, j]] = 2.0
        return keys.argmin(dim=1)

    def _repair(self, mutant: Tensor, parent: Tensor) -> Tensor:
        import torch

        if self.bounds is None:
            return mutant
        lo = self.bounds[0].to(mutant.device, mutant.dtype)
        hi = self.bounds[1].to(mutant.device, mutant.dtype)
        mode = self.config.bounds_repair
        if mode == "midpoint":
            mutant = torch.where(mutant < lo, (lo + parent) / 2, mutant)
            mutant = torch.where(mutant > hi, (hi + parent) / 2, mutant)
        elif mode == "reflect":
            mutant = torch.where(mutant < lo, 2 * lo - mutant, mutant)
            mutant = torch.where(mutant > hi, 2 * hi - mutant, mutant)
        return torch.minimum(torch.maximum(mutant, lo), hi)

    # ------------------------------------------------------------------ API
    def ask(self, population: Tensor, fitness: Tensor) -> Tensor:
        """Trial vectors ``(P, D)`` for ``population`` (mutation, bounds repair, binomial crossover).

        Consumes only this object's generator: equal seeds and inputs give equal trials on every rank.
        """
        import torch

        f = self._check(population, fitness)
        P, D, cfg = self.pop_size, self.dim, self.config
        dev, dt = population.device, population.dtype
        F, CR = self._sample_F_CR()
        adaptive = cfg.adaptation != "none"
        order = torch.argsort(f, stable=True)
        best = int(order[0])
        n_arch = self.archive.shape[0] if (self.uses_archive and self.archive is not None) else 0
        pool = population if n_arch == 0 else torch.cat([population, self.archive.to(dev, dt)], dim=0)

        if cfg.strategy == "rand/1/bin":
            r = self._distinct(2)
            r_last = self._from_union(r, n_arch)
            base_idx, diff_a = r[:, 0], r[:, 1]
        else:
            r = self._distinct(1)
            r_last = self._from_union(r, n_arch)
            diff_a = r[:, 0]
            if cfg.strategy == "best/1/bin":
                base_idx = torch.full((P,), best, dtype=torch.long)
        Fd = F.to(dev, dt).unsqueeze(1)
        diff = population[diff_a.to(dev)] - pool[r_last.to(dev)]
        if cfg.strategy == "current-to-best/1/bin":
            if adaptive:  # JADE current-to-pbest/1: a random one of the round(p * P) best
                n_top = max(1, int(round(cfg.p_best * P)))
                pick = torch.randint(0, n_top, (P,), generator=self.generator)
                guide_idx = order[pick]
            else:
                guide_idx = torch.full((P,), best, dtype=torch.long)
            mutant = population + Fd * (population[guide_idx.to(dev)] - population) + Fd * diff
        else:
            mutant = population[base_idx.to(dev)] + Fd * diff
        mutant = self._repair(mutant, population)

        mask = torch.rand((P, D), generator=self.generator, dtype=torch.float32) < CR.to(torch.float32).unsqueeze(1)
        j_rand = torch.randint(0, D, (P,), generator=self.generator)
        mask[torch.arange(P), j_rand] = True  # at least one component from the mutant
        trials = torch.where(mask.to(dev), mutant, population)
        self._pending = {"F": F, "CR": CR}
        return trials

    def tell(
        self, population: Tensor, fitness: Tensor, trials: Tensor, trial_fitness: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Greedy selection and adaptation: ``(new_population, new_fitness, accepted)``.

        ``accepted[i]`` is True iff ``trial_fitness[i] <= fitness[i]`` (NaN/inf count as +inf). Parents replaced by a
        strictly better trial go to the archive; their F_i/CR_i update the JADE means or the SHADE memory.
        """
        import torch

        if self._pending is None:
            raise RuntimeError("tell() called without a preceding ask()")
        f = self._check(population, fitness)
        tf = self._check(trials, trial_fitness, what="trials")
        accepted = tf <= f
        improved = tf < f
        F, CR = self._pending["F"], self._pending["CR"]
        cfg = self.config

        if cfg.adaptation != "none" and bool(improved.any()):
            sF, sCR = F[improved], CR[improved]
            delta = (f - tf)[improved]
            if bool(torch.isinf(delta).any()):  # a diverged parent replaced: weigh those successes equally
                w = torch.isinf(delta).to(torch.float64)
            else:
                w = delta
            w = w / w.sum() if float(w.sum()) > 0 else torch.full_like(sF, 1.0 / sF.numel())
            if cfg.adaptation == "jade":
                self.mu_CR = (1 - cfg.c) * self.mu_CR + cfg.c * float(sCR.mean())
                self.mu_F = (1 - cfg.c) * self.mu_F + cfg.c * _lehmer(sF, torch.ones_like(sF))
            else:
                self.memory_CR[self.memory_pos] = float((w * sCR).sum())
                self.memory_F[self.memory_pos] = _lehmer(sF, w)
                self.memory_pos = (self.memory_pos + 1) % cfg.memory_size
        if self.uses_archive and bool(improved.any()):
            parents = population[improved.to(population.device)].detach()
            arch = parents if self.archive is None else torch.cat([self.archive.to(parents.device), parents])
            if arch.shape[0] > self.pop_size:  # random removal down to P (JADE)
                keep = torch.randperm(arch.shape[0], generator=self.generator)[: self.pop_size]
                arch = arch[keep.sort().values.to(arch.device)]
            self.archive = arch.clone()

        acc_dev = accepted.to(population.device)
        new_pop = torch.where(acc_dev.unsqueeze(1), trials.to(population.dtype), population)
        new_fit_cpu = torch.where(accepted, tf, f)
        new_fit = new_fit_cpu.to(fitness.device, fitness.dtype if fitness.is_floating_point() else torch.float64)
        order = torch.argsort(new_fit_cpu, stable=True)
        self.best_index, self.best_value = int(order[0]), float(new_fit_cpu[order[0]])
        self.last_stats = {
            "mean_F": float(F.mean()),
            "mean_CR": float(CR.mean()),
            "accepted": float(accepted.double().mean()),
        }
        self._pending = None
        self.generation += 1
        return new_pop, new_fit, accepted.to(fitness.device)

    @staticmethod
    def best(fitness: Tensor) -> tuple[int, float]:
        """Index and value of the best (lowest; NaN counts as +inf, ties → lowest index) individual."""
        import torch

        f = sanitize_fitness(fitness)
        i = int(torch.argsort(f, stable=True)[0])
        return i, float(f[i])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically: generator, memories, archive, pending F/CR."""
        return {
            "config": self.config.model_dump(),
            "pop_size": self.pop_size,
            "dim": self.dim,
            "seed": self.seed,
            "generator": self.generator.get_state().clone(),
            "mu_F": self.mu_F,
            "mu_CR": self.mu_CR,
            "memory_F": self.memory_F.clone(),
            "memory_CR": self.memory_CR.clone(),
            "memory_pos": self.memory_pos,
            "archive": None if self.archive is None else self.archive.detach().cpu().clone(),
            "generation": self.generation,
            "pending": None if self._pending is None else {k: v.clone() for k, v in self._pending.items()},
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; refuses a state from a different config, size or dimension."""
        import torch

        if d.get("config") != self.config.model_dump():
            raise ValueError(f"DE state was saved with config {d.get('config')}, this object has {self.config}")
        if d.get("pop_size") != self.pop_size or d.get("dim") != self.dim:
            raise ValueError(
                f"DE state is for pop_size={d.get('pop_size')}, dim={d.get('dim')}; "
                f"this object has pop_size={self.pop_size}, dim={self.dim}"
            )
        self.generator.set_state(d["generator"].clone())
        self.mu_F = float(d["mu_F"])
        self.mu_CR = float(d["mu_CR"])
        self.memory_F = d["memory_F"].clone().to(torch.float64)
        self.memory_CR = d["memory_CR"].clone().to(torch.float64)
        self.memory_pos = int(d["memory_pos"])
        self.archive = None if d["archive"] is None else d["archive"].clone().to(self.device)
        self.generation = int(d["generation"])
        self._pending = None if d["pending"] is None else {k: v.clone() for k, v in d["pending"].items()}


def diversity(population: Tensor) -> float:
    """Mean pairwise Euclidean distance between individuals (0 for a collapsed population)."""
    import torch

    P = population.shape[0]
    if P < 2:
        return 0.0
    d = torch.pdist(population.detach().to(torch.float64))
    return float(d.mean())


@dataclass
class DEResult:
    """Outcome of :func:`minimize`; ``history`` has one entry per generation (0 = the initial population)."""

    x: Tensor
    fun: float
    population: Tensor
    fitness: Tensor
    nfev: int
    generations: int
    history: list[dict[str, float]] = field(default_factory=list)


def _record(gen: int, pop: Tensor, fit: Tensor, stats: dict[str, float]) -> dict[str, float]:
    f = sanitize_fitness(fit)
    return {
        "generation": gen,
        "best": float(f.min()),
        "median": float(f.median()),
        "mean_F": stats.get("mean_F", math.nan),
        "mean_CR": stats.get("mean_CR", math.nan),
        "accepted": stats.get("accepted", math.nan),
        "diversity": diversity(pop),
    }


def minimize(
    fn: Callable[[Tensor], Tensor],
    *,
    dim: int,
    bounds: tuple[Tensor, Tensor] | Sequence[Any] | None,
    pop_size: int,
    generations: int,
    config: DEConfig | None = None,
    seed: int = 0,
    evaluate: Callable[[Callable[[Tensor], Tensor], Tensor], Tensor] | None = None,
    init: Tensor | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> DEResult:
    """Minimize ``fn`` over ``dim`` real variables with DE for ``generations`` generations.

    ``fn`` maps a ``(P, D)`` batch to ``(P,)`` fitness. ``evaluate(fn, batch)`` replaces the plain call ``fn(batch)``
    (e.g. to evaluate rows in a process pool). ``init`` is the initial population; without it the population is
    uniform within ``bounds`` (or standard normal without bounds). ``callback`` gets each history entry.
    Uses ``pop_size * (generations + 1)`` evaluations.
    """
    import torch

    config = config or DEConfig()
    if generations < 0:
        raise ValueError(f"generations must be >= 0, got {generations}")
    de = DifferentialEvolution(config, pop_size=pop_size, dim=dim, seed=seed, bounds=bounds, device=device, dtype=dtype)
    call = evaluate or (lambda f, x: f(x))

    def _eval(x: Tensor) -> Tensor:
        out = torch.as_tensor(call(fn, x)).flatten()
        if out.shape[0] != x.shape[0]:
            raise ValueError(f"fn returned {out.shape[0]} fitness values for {x.shape[0]} rows")
        return sanitize_fitness(out)

    if init is not None:
        pop = init.detach().to(de.device, de.dtype).clone()
        if tuple(pop.shape) != (pop_size, dim):
            raise ValueError(f"init has shape {tuple(pop.shape)}, expected ({pop_size}, {dim})")
    else:
        pop = de.initial_population()
    fit = _eval(pop)
    nfev = pop_size
    history = [_record(0, pop, fit, {})]
    if callback:
        callback(history[-1])
    for g in range(1, generations + 1):
        trials = de.ask(pop, fit)
        tfit = _eval(trials)
        nfev += pop_size
        pop, fit, _ = de.tell(pop, fit, trials, tfit)
        history.append(_record(g, pop, fit, de.last_stats))
        if callback:
            callback(history[-1])
    i, best = de.best(fit)
    return DEResult(
        x=pop[i].clone(), fun=best, population=pop, fitness=fit, nfev=nfev, generations=generations, history=history
    )
