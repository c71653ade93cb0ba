"""The learning task every algorithm of the harness trains: data, network, batches, losses and the fitted model.

A :class:`Task` is built identically on every rank from a :class:`~l2vol.training.config.TrainConfig`. It owns:

* the data: train/val/test parquet tables with ``symbol``, ``ts``, the feature columns and the target column. Rows
  whose target is zero or not finite (halted or limit-locked buckets) are left out of every loss and counted
  (``n_excluded``); they stay in the table as history for the sequence model;
* the normalization of the l2vol models, exactly: a :class:`l2vol.models.base.Standardizer` fit on the **training
  rows only**, and the log target standardized with the training mean and standard deviation. So the trained
  network is the network of a real fitted ``l2vol.models`` estimator (:meth:`Task.to_estimator`), whose bias factor
  is fit on the validation rows;
* the network, built by the l2vol model class itself (``MLPNet``, pytorch-tabnet's ``TabNet``, ``LSTMAttentionNet``);
* deterministic batches: :meth:`Task.train_batch` is a pure function of ``(seed, rank, world_size, stream, step)``
  over the rank's shard of the training rows; :meth:`Task.fitness_batch` a validation subsample that depends on the
  generation only, identical on every rank.

Losses are on the standardized log target (MSE), plus TabNet's sparsity term in training (as pytorch-tabnet trains
it: ``MSE - lambda_sparse * M_loss``, ``M_loss`` being the negative entropy of the attention masks).
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from l2vol.models.base import (
    Standardizer,
    as_matrix,
    feature_columns,
    fit_bias_factor,
    log_target,
    require_nonnegative_target,
)

if TYPE_CHECKING:
    import torch

    from l2vol.models.base import Estimator
    from l2vol.training.config import TrainConfig

Batch = tuple["torch.Tensor", ...]
SPLITS = ("train", "val", "test")
EVAL_CHUNK = 4096  # rows per forward pass in evaluation (the l2vol models' own chunk: identical numbers)
TABNET_CHUNK = 1024  # pytorch-tabnet's predict batch size as l2vol.models.TabNetRegressor loads it
_SHARD_SALT, _BATCH_SALT, _FITNESS_SALT = 0x5A4D, 0xBA7C, 0xF17E


def target_columns() -> set[str]:
    """Every target column of the factor engine (``rv_<h>``, ``zero_<h>``): never a feature."""
    from l2vol.factors.targets import TARGET_COLUMNS

    return set(TARGET_COLUMNS)


def read_table(uri: str, *, who: str) -> pd.DataFrame:
    """A parquet file (local path, ``file://`` or ``s3://``) as a pandas frame; errors name the file."""
    import pyarrow.parquet as pq

    from l2vol.storage.uri import open_filesystem

    fs, path = open_filesystem(uri)
    try:
        return pq.read_table(path, filesystem=fs).to_pandas()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{who}: cannot read parquet {uri!r} ({exc})") from exc


class _Split:
    """One table of the task: the frame, its standardized features and log target, the rows in the loss."""

    def __init__(self, name: str, frame: pd.DataFrame, y: np.ndarray):
        self.name = name
        self.frame = frame
        self.y = y
        self.z = log_target(y)  # NaN on excluded rows
        self.rows = np.flatnonzero(np.isfinite(self.z))
        self.n_excluded = int(len(y) - len(self.rows))


class Task:
    """Data, network, batches, losses and conversion to an ``l2vol.models`` estimator (see the module docstring)."""

    def __init__(self, config: TrainConfig, *, device: str = "cpu", frames: dict[str, pd.DataFrame] | None = None):
        import torch

        from l2vol.models import MODELS

        self.config = config
        self.kind = config.model
        self.device = device
        self.seed = int(config.seed)
        self.estimator_class = MODELS[self.kind]
        # Hyperparameters of the l2vol class: the architecture from model_params, the training ones from the config
        # (so the saved model records how it was trained). An unknown key is the class's own TypeError.
        params = dict(config.model_params)
        train_keys = {"lr": config.optim.lr, "batch_size": config.optim.batch_size, "seed": self.seed}
        if self.kind != "tabnet":
            train_keys["weight_decay"] = config.optim.weight_decay
        clash = sorted(set(params) & set(train_keys))
        if clash:
            raise ValueError(f"model_params: {clash} are set by optim/seed in the training config, not model_params")
        try:
            self.params = self.estimator_class(**{**params, **train_keys, "device": device}).get_params()
        except TypeError as exc:
            raise ValueError(f"model_params for {self.kind!r}: {exc}") from exc

        from_files = frames is None
        frames = self._read(config) if from_files else frames
        target = config.data.target
        splits: dict[str, _Split] = {}
        for name, frame in frames.items():
            if target not in frame.columns:
                raise ValueError(f"data.{name}: target column {target!r} is missing (columns: {list(frame.columns)})")
            frame = frame.reset_index(drop=True)
            y = frame[target].to_numpy(dtype=np.float64, na_value=np.nan)
            source = getattr(config.data, name, None) if from_files else None
            require_nonnegative_target(y, f"data.{name}" + (f" ({source})" if source else ""), target)
            splits[name] = _Split(name, frame, y)
        self.splits = splits
        train = splits["train"]
        if len(train.rows) < 2:
            raise ValueError(f"data.train: {len(train.rows)} rows with a positive finite {target!r}; need >= 2")
        if len(splits["val"].rows) < 1:
            raise ValueError(f"data.val: no row with a positive finite {target!r}")

        if config.data.features is not None:
            self.features = feature_columns(train.frame, config.data.features, "data.features")
            bad = sorted(set(self.features) & (target_columns() | {target}))
            if bad:
                raise ValueError(f"data.features: {bad} are target columns (look-ahead), not features")
        else:
            excluded = target_columns() | {target, "bucket"}
            self.features = [c for c in feature_columns(train.frame, None, "data.train") if c not in excluded]
            if not self.features:
                raise ValueError("data.train: no numeric feature column besides the keys and the targets")
        for s in splits.values():
            missing = [c for c in self.features if c not in s.frame.columns]
            if missing:
                raise ValueError(f"data.{s.name}: feature columns {missing} are missing")
        if self.kind == "lstm":
            for s in splits.values():
                missing = [c for c in ("symbol", "ts") if c not in s.frame.columns]
                if missing:
                    raise ValueError(f"data.{s.name}: the lstm model needs columns {missing}")

        # The l2vol models' normalization, fit on the training rows only (all of them, as TorchRegressor.fit does).
        with warnings.catch_warnings():  # an all-missing training column is scaled to 0; numpy's notice is noise
            warnings.simplefilter("ignore", RuntimeWarning)
            self.normalizer = Standardizer.fit(as_matrix(train.frame, self.features))
        zt = train.z[train.rows]
        self.z_mean, self.z_std = float(zt.mean()), float(zt.std() or 1.0)
        self.estimator = self._skeleton()

        # Inputs per split: a function from positions (tensor) to the module's inputs, and the standardized target.
        self._inputs: dict[str, Callable[[torch.Tensor], list[torch.Tensor]]] = {}
        self._target: dict[str, torch.Tensor] = {}
        for name, s in splits.items():
            self._inputs[name] = self.estimator._batcher(s.frame, np.arange(len(s.frame)))
            zs = np.where(np.isfinite(s.z), (s.z - self.z_mean) / self.z_std, 0.0)
            self._target[name] = torch.as_tensor(zs, dtype=torch.float32).to(device)

        # Rank shards: one seeded permutation of the training rows in the loss, split into world_size parts.
        self._shard_cache: dict[int, list[np.ndarray]] = {}
        self._perm_cache: dict[tuple[int, int, int], tuple[int, np.ndarray]] = {}
        self.batch_size = int(config.optim.batch_size)
        if self.kind == "tabnet":
            vbs = int(self.params["virtual_batch_size"])
            self.virtual_batch_size = vbs
            self.lambda_sparse = float(self.params["lambda_sparse"])

    # ------------------------------------------------------------------ data
    @staticmethod
    def _read(config: TrainConfig) -> dict[str, pd.DataFrame]:
        out = {
            "train": read_table(config.data.train, who="data.train"),
            "val": read_table(config.data.val, who="data.val"),
        }
        if config.data.test:
            out["test"] = read_table(config.data.test, who="data.test")
        return out

    @property
    def n_excluded(self) -> dict[str, int]:
        """Rows per split left out of every loss (zero or non-finite target)."""
        return {name: s.n_excluded for name, s in self.splits.items()}

    def shard(self, rank: int, world_size: int) -> np.ndarray:
        """Positions (in the training table) of ``rank``'s shard: disjoint across ranks, together all rows in the
        loss. A seeded permutation split into ``world_size`` contiguous parts."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        if world_size not in self._shard_cache:
            rows = self.splits["train"].rows
            perm = np.random.default_rng(np.random.SeedSequence([self.seed, _SHARD_SALT])).permutation(rows)
            self._shard_cache[world_size] = np.array_split(perm, world_size)
        return self._shard_cache[world_size][rank]

    def _batch_rows(self, rank: int, world_size: int, stream: int, step: int) -> np.ndarray:
        shard = self.shard(rank, world_size)
        n = len(shard)
        b = min(self.batch_size, n)
        pos = np.arange(step * b, step * b + b, dtype=np.int64)
        epochs, offsets = pos // n, pos % n
        out = np.empty(b, dtype=np.int64)
        for e in np.unique(epochs):
            perm = self._epoch_perm(rank, world_size, stream, int(e), n)
            sel = epochs == e
            out[sel] = shard[perm[offsets[sel]]]
        return out

    def _epoch_perm(self, rank: int, world_size: int, stream: int, epoch: int, n: int) -> np.ndarray:
        """The order of ``rank``'s shard in ``epoch`` of ``stream`` (one epoch kept per stream)."""
        key = (rank, world_size, stream)
        hit = self._perm_cache.get(key)
        if hit is not None and hit[0] == epoch:
            return hit[1]
        ss = np.random.SeedSequence([self.seed, _BATCH_SALT, rank, world_size, stream, epoch])
        perm = np.random.default_rng(ss).permutation(n)
        self._perm_cache[key] = (epoch, perm)
        return perm

    def rows_batch(self, split: str, rows: np.ndarray) -> Batch:
        """The module inputs and standardized target of ``rows`` (positions in the split's table)."""
        import torch

        idx = torch.as_tensor(np.asarray(rows, dtype=np.int64)).to(self.device)
        return (*self._inputs[split](idx), self._target[split][idx])

    def train_batch(self, *, rank: int, world_size: int, stream: int, step: int) -> Batch:
        """Minibatch ``step`` of individual ``stream`` on ``rank``: a pure function of (seed, rank, world_size,
        stream, step). Each stream walks its rank's shard in epochs, each epoch a permutation seeded by
        (seed, rank, world_size, stream, epoch), so every row of the shard is seen once per epoch."""
        if step < 0 or stream < 0:
            raise ValueError(f"step={step}, stream={stream}: must be >= 0")
        return self.rows_batch("train", self._batch_rows(rank, world_size, stream, step))

    def fitness_rows(self, generation: int) -> np.ndarray:
        """Validation positions of generation ``generation``'s fitness subsample (sorted; all rows when the
        validation set is smaller than ``data.val_subsample``)."""
        rows = self.splits["val"].rows
        m = self.config.data.val_subsample
        if len(rows) <= m:
            return rows
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _FITNESS_SALT, int(generation)]))
        return np.sort(rng.choice(rows, size=m, replace=False))

    def fitness_batch(self, generation: int) -> Batch:
        """The validation subsample scored in generation ``generation``: identical on every rank."""
        return self.rows_batch("val", self.fitness_rows(generation))

    # ----------------------------------------------------------------- model
    def _skeleton(self) -> Estimator:
        """An unfitted l2vol estimator carrying the task's learned normalization (features, normalizer, target
        moments, vocabularies): the model class builds the network and the batches from it."""
        est = self.estimator_class(**self.params)
        est.device_ = self.device
        est.features_ = list(self.features)
        est.normalizer_ = self.normalizer
        est.z_mean_, est.z_std_ = self.z_mean, self.z_std
        if self.kind == "lstm":
            est._fit_extra(self.splits["train"].frame)  # symbol/industry vocabularies of the training rows
        if self.kind == "tabnet":
            est.virtual_batch_size_ = min(int(est.virtual_batch_size), int(self.config.optim.batch_size))
            est._batcher = lambda X, rows: _rows_of(est._x(X)[rows], self.device)
        return est

    def _tabnet_model(self, seed: int):
        """pytorch-tabnet's model wrapper with its network built exactly as ``TabNetRegressor`` loads one."""
        from l2vol.models import _torch as T

        est = copy.copy(self.estimator)
        est.seed = seed
        model = est._tabnet()
        model.input_dim, model.output_dim = len(self.features), 1
        model.virtual_batch_size, model.batch_size = est.virtual_batch_size_, TABNET_CHUNK
        with T.seeded(seed, self.device):  # _set_network reseeds torch's global RNG: keep that inside the fork
            model._set_network()
        return model

    def build_module(self, seed: int) -> torch.nn.Module:
        """A fresh network; the same seed gives identical initial weights (parameters and buffers)."""
        from l2vol.models import _torch as T

        if self.kind == "tabnet":
            return self._tabnet_model(seed).network.to(self.device)
        with T.seeded(seed, self.device):
            return self.estimator._module().to(self.device)

    def make_optimizer(self, module: torch.nn.Module) -> torch.optim.Optimizer:
        """Adam, as the l2vol models train (TabNet: pytorch-tabnet's Adam without weight decay unless set)."""
        import torch

        o = self.config.optim
        return torch.optim.Adam(module.parameters(), lr=o.lr, weight_decay=o.weight_decay)

    def clip_gradients(self, module: torch.nn.Module) -> None:
        """Clip the gradient norm to ``optim.grad_clip`` (as ``l2vol.models`` trains); call before ``step``."""
        import torch

        if self.config.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(module.parameters(), self.config.optim.grad_clip)

    def predict_std(self, module: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The network's forecast of the standardized log target, shape (batch,)."""
        out = module(*inputs)
        if self.kind == "tabnet":
            return out[0][:, 0]
        return out

    def loss(self, module: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """Training loss: MSE on the standardized log target, plus TabNet's sparsity term (as pytorch-tabnet:
        ``- lambda_sparse * M_loss``). The caller sets the module's mode (train for optimizer steps)."""
        import torch

        *inputs, target = batch
        out = module(*inputs)
        if self.kind == "tabnet":
            pred, m_loss = out
            return torch.nn.functional.mse_loss(pred[:, 0], target) - self.lambda_sparse * m_loss
        return torch.nn.functional.mse_loss(out, target)

    def train_step(
        self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, *, model=None
    ) -> float:
        """One optimizer step on ``batch`` (train mode, gradient clipping); returns the loss before the step.

        ``model``: a wrapper that runs the forward pass (e.g. ``DistributedDataParallel``, whose backward all-reduces
        the gradients); gradients are clipped on ``module``, the network it wraps."""
        model = module if model is None else model
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(model, batch)
        loss.backward()
        self.clip_gradients(module)
        optimizer.step()
        return float(loss.detach())

    def _forward_std(self, module: torch.nn.Module, split: str, rows: np.ndarray) -> torch.Tensor:
        """Eval-mode forecasts of the standardized log target for ``rows`` of ``split``, in the l2vol models'
        chunks (so they equal the fitted estimator's numbers); restores the module's mode."""
        import torch

        was_training = module.training
        module.eval()
        chunk = TABNET_CHUNK if self.kind == "tabnet" else EVAL_CHUNK
        idx = torch.as_tensor(np.asarray(rows, dtype=np.int64)).to(self.device)
        with torch.no_grad():
            parts = [
                self.predict_std(module, self._inputs[split](idx[i : i + chunk])) for i in range(0, len(idx), chunk)
            ]
        module.train(was_training)
        return torch.cat(parts) if parts else torch.zeros(0, device=self.device)

    def fitness(self, module: torch.nn.Module, batch: Batch) -> float:
        """MSE of the standardized log forecast on ``batch`` (eval mode, no grad); lower is better. A state that
        cannot be evaluated — a non-finite entry, or a negative BatchNorm running variance (a DE trial can combine
        variances into one; TabNet's entmax then fails) — or a non-finite forecast is infinitely unfit."""
        return self.fitness_of_parts(self.fitness_parts(module, batch), batch)

    def fitness_chunks(self, batch: Batch) -> int:
        """How many forward chunks a fitness evaluation of ``batch`` takes (the parts of :meth:`fitness_parts`)."""
        return -(-len(batch[-1]) // EVAL_CHUNK)

    def fitness_parts(self, module: torch.nn.Module, batch: Batch, *, part: int = 0, parts: int = 1) -> list[float]:
        """The squared errors of ``batch`` summed per forward chunk (:meth:`fitness_chunks` of them), computing only
        the chunks ``c`` with ``c % parts == part`` (the others are 0.0): ``parts`` ranks can score one state
        together, and the element-wise sum of their lists gives each chunk's sum exactly (x + 0.0 == x). Every
        chunk is ``inf`` for a state that cannot be evaluated (see :meth:`fitness`)."""
        import torch

        *inputs, target = batch
        n_chunks = self.fitness_chunks(batch)
        if not state_is_valid(module):
            return [math.inf] * n_chunks
        # Every model in chunks of EVAL_CHUNK rows, TabNet too: with its ghost BatchNorm applied to whole batches
        # (eval mode), pytorch-tabnet's 1,024-row predict chunks would change only the per-operation overhead (a
        # 2,048-row TabNet fitness: 2 x 7.3 ms in 1,024-row chunks, 11.3 ms in one forward).
        chunk = EVAL_CHUNK
        out = [0.0] * n_chunks
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad(), _whole_ghost_batches(module):
                for c in range(part, n_chunks, parts):
                    i = c * chunk
                    err = self.predict_std(module, [t[i : i + chunk] for t in inputs]) - target[i : i + chunk]
                    out[c] = float((err**2).sum())
        finally:
            module.train(was_training)
        return out

    @staticmethod
    def fitness_of_parts(sse: Sequence[float], batch: Batch) -> float:
        """The fitness from the chunk sums of :meth:`fitness_parts` (added in chunk order)."""
        mse = sum(sse) / max(len(batch[-1]), 1)
        return mse if math.isfinite(mse) else math.inf

    def predict_log(self, module: torch.nn.Module, split: str) -> np.ndarray:
        """``log y`` forecasts of every row of ``split`` (float64), as the fitted estimator's ``predict_log``."""
        s = self.splits[split]
        return (
            self._forward_std(module, split, np.arange(len(s.frame))).double().cpu().numpy() * self.z_std + self.z_mean
        )

    def bias_factor(self, module: torch.nn.Module, z_hat_val: np.ndarray | None = None) -> float:
        """The estimator's bias factor (``bias_correction``, default ``ratio``) fit on the validation rows."""
        val = self.splits["val"]
        z_hat = self.predict_log(module, "val") if z_hat_val is None else z_hat_val
        ok = np.isfinite(val.z) & np.isfinite(z_hat)
        return fit_bias_factor(val.z[ok], z_hat[ok], self.params["bias_correction"])

    def evaluate(self, module: torch.nn.Module, split: Literal["train", "val", "test"]) -> dict[str, float]:
        """Metrics on ``split``'s rows in the loss: ``loss`` (MSE of the standardized log target), ``qlike`` and
        ``rmspe`` on the RV scale after the bias correction fit on validation, row counts."""
        from l2vol.evaluation.metrics import qlike, rmspe

        if split not in self.splits:
            raise ValueError(f"split {split!r} is not loaded (splits: {sorted(self.splits)})")
        z_val = self.predict_log(module, "val")
        bias = self.bias_factor(module, z_val)
        s = self.splits[split]
        z_hat = z_val if split == "val" else self.predict_log(module, split)
        rows = s.rows
        zs_hat = (z_hat[rows] - self.z_mean) / self.z_std
        zs = (s.z[rows] - self.z_mean) / self.z_std
        f = bias * np.exp(z_hat[rows])
        return {
            "loss": float(np.mean((zs_hat - zs) ** 2)),
            "qlike": qlike(s.y[rows], f),
            "rmspe": rmspe(s.y[rows], f),
            "bias_factor": float(bias),
            "rows": int(len(rows)),
            "n_excluded": s.n_excluded,
        }

    def to_estimator(self, module: torch.nn.Module, *, steps: int | None = None) -> Estimator:
        """A fitted ``l2vol.models`` estimator holding (a copy of) ``module``: the task's train-only normalization
        and the bias factor fit on validation; ``predict`` gives the module's numbers, ``save``/``load`` round-trip."""
        est = self.estimator_class(**self.params)
        est.device_ = self.device
        est.features_ = list(self.features)
        est.normalizer_ = self.normalizer
        est.z_mean_, est.z_std_ = self.z_mean, self.z_std
        net = copy.deepcopy(module).to(self.device).eval()
        if self.kind == "lstm":
            est.symbols_, est.industries_ = self.estimator.symbols_, self.estimator.industries_
        if self.kind == "tabnet":
            model = self._tabnet_model(int(self.params["seed"]))
            model.network.load_state_dict(net.state_dict())
            model.network.eval()
            est.tabnet_ = model
            est.virtual_batch_size_ = self.estimator.virtual_batch_size_
        else:
            est.module_ = net
            est.eval_history_ = []
        est.best_epoch_ = int(steps if steps is not None else 0)
        est.n_excluded_ = self.splits["train"].n_excluded
        est.bias_source_ = "eval_set"
        est.bias_factor_ = self.bias_factor(module)
        est.n_features_in_ = len(self.features)
        return est


def _rows_of(x: np.ndarray, device: str):
    from l2vol.models import _torch as T

    return T.row_batcher([x], device)


@contextlib.contextmanager
def _whole_ghost_batches(module: torch.nn.Module):
    """While the module is in eval mode: pytorch-tabnet's ghost batch normalization (``GBN``) applies its BatchNorm
    to the whole input at once instead of to ``virtual_batch_size``-row chunks. In eval mode BatchNorm normalizes
    each row with the running statistics, so the chunks change nothing but the cost (a 2,048-row fitness batch
    at ``virtual_batch_size`` 64 means 32 BatchNorm calls per GBN layer); the forecasts are the same. Restored on
    exit; modules without GBN layers are left alone."""
    ghosts = [
        m
        for m in module.modules()
        if not m.training and type(m).__name__ == "GBN" and hasattr(m, "virtual_batch_size") and hasattr(m, "bn")
    ]
    saved = [m.virtual_batch_size for m in ghosts]
    try:
        for m in ghosts:
            m.virtual_batch_size = sys.maxsize
        yield
    finally:
        for m, v in zip(ghosts, saved, strict=True):
            m.virtual_batch_size = v


def state_is_valid(module: torch.nn.Module) -> bool:
    """Every floating entry of the state finite and every BatchNorm running variance >= 0."""
    import torch

    # Checked on the concatenated state (a handful of tensor operations, not three per tensor: TabNet's state has
    # about 80 tensors and this runs before every fitness evaluation).
    floats = [(name, t) for name, t in module.state_dict().items() if t.is_floating_point()]
    if floats and not bool(torch.isfinite(torch.cat([t.reshape(-1) for _, t in floats])).all()):
        return False
    variances = [t.reshape(-1) for name, t in floats if name.endswith("running_var")]
    return not (variances and bool((torch.cat(variances) < 0).any()))


def build_task(config: TrainConfig, *, device: str = "cpu") -> Task:
    """The task of ``config`` on ``device`` (the rank's device from :func:`l2vol.training.dist.init_distributed`)."""
    return Task(config, device=device)


def parameter_count(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))
