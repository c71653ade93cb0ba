"""Typed configuration of a training run (DESIGN §6): the data, the model, the algorithm and its budget.

One YAML file drives every algorithm of the harness (``single``, ``ddp``, ``local_sgd``, ``parallel_de``), so the
baselines and Parallel_DE see the same data, model, step budget and seeds. Unknown keys are errors
(:class:`l2vol.config.StrictModel`). Loading this module imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from l2vol.config import StrictModel, load_yaml_config
from l2vol.training.de import DEConfig

ALGORITHMS = ("single", "ddp", "local_sgd", "parallel_de")
MODEL_KINDS = ("mlp", "tabnet", "lstm")


class DataConfig(StrictModel):
    """Parquet tables (paths or URIs) with ``symbol``, ``ts``, the feature columns and the target column."""

    train: str = Field(description="training rows (the only rows normalizers are fit on)")
    val: str = Field(description="validation rows: DE fitness, bias correction, model choice")
    test: str | None = Field(None, description="test rows, scored once at the end (optional)")
    target: str = Field("rv_next_bucket", description="target column (realized variance over the horizon)")
    features: list[str] | None = Field(
        None, description="feature columns; default: every numeric column except keys and rv_*/zero_* targets"
    )
    val_subsample: int = Field(4096, ge=1, description="validation rows used as DE fitness (shared by all ranks)")


class OptimConfig(StrictModel):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(512, ge=2)
    grad_clip: float | None = Field(5.0, gt=0, description="max gradient norm (as l2vol.models trains); None = off")


class BudgetConfig(StrictModel):
    steps: int = Field(400, ge=1, description="local optimizer steps per worker in total")
    wall_clock_s: float | None = Field(None, gt=0, description="stop at the first sync point after this")
    eval_every: int | None = Field(
        None,
        ge=1,
        description="steps between history points of single/ddp (default: parallel_de.local_steps, so every "
        "algorithm reports on the same step grid); local_sgd reports at its averaging steps",
    )


class ParallelDEConfig(StrictModel):
    individuals_per_rank: int = Field(2, ge=1)
    local_steps: int = Field(50, ge=1, description="k: local optimizer steps between DE generations")
    reset_warmup_steps: int = Field(
        0,
        ge=0,
        description="an individual replaced by its trial restarts Adam with fresh moments; its learning rate ramps "
        "linearly from lr/(w+1) to lr over these first w steps (0: no ramp)",
    )
    de: DEConfig = Field(default_factory=DEConfig)


class LocalSGDConfig(StrictModel):
    sync_every: int = Field(50, ge=1, description="local steps between parameter (and buffer) averaging")


class TrainConfig(StrictModel):
    model: Literal["mlp", "tabnet", "lstm"]
    model_params: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of the l2vol.models class (architecture; lr/batch_size/seed come from "
        "optim and seed)",
    )
    algorithm: Literal["single", "ddp", "local_sgd", "parallel_de"] = "parallel_de"
    data: DataConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    parallel_de: ParallelDEConfig = Field(default_factory=ParallelDEConfig)
    local_sgd: LocalSGDConfig = Field(default_factory=LocalSGDConfig)
    seed: int = 0
    out: str = Field(description="run output URI/dir: model/, metrics.json, history.png, checkpoints/")
    timeout_s: float = Field(120.0, gt=0, description="collective timeout: a dead rank is an error within this")
    resume: bool = Field(True, description="resume from out/checkpoints when present")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present (NCCL), else CPU")
    threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads per process; None: OMP_NUM_THREADS when set, else torch's default",
    )


def load_train_config(path: str | Path) -> TrainConfig:
    """Load a training config from YAML; errors name the file and the offending keys."""
    return load_yaml_config(path, TrainConfig)
