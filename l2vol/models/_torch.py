"""Torch plumbing shared by the neural models: device, seeded deterministic sections, the training loop
and safetensors weights. Imported lazily (inside methods) so ``import l2vol.models`` stays light."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when CUDA is available, else ``"cpu"``; other values pass through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} requested but CUDA is not available")
    return device


@contextlib.contextmanager
def seeded(seed: int, device: str) -> Iterator[None]:
    """Run a block with torch's RNGs seeded and deterministic algorithms on; the caller's RNG state and
    determinism flag are restored afterwards (so models don't change global state of the process)."""
    devices = [torch.cuda.current_device()] if device.startswith("cuda") else []
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn


def to_tensors(arrays: Sequence[np.ndarray], device: str) -> list[torch.Tensor]:
    return [torch.as_tensor(a).to(device) for a in arrays]


#: Maps a 1-d tensor of row positions to the module's inputs for those rows. Sequence models gather
#: their windows here, batch by batch, instead of materializing (rows, k, features) up front.
Batcher = Callable[[torch.Tensor], Sequence[torch.Tensor]]


def row_batcher(arrays: Sequence[np.ndarray], device: str) -> Batcher:
    """A batcher over per-row arrays (all of the same length)."""
    tensors = to_tensors(arrays, device)
    return lambda idx: [t[idx] for t in tensors]


def train_module(
    module: nn.Module,
    train: tuple[Batcher, int],
    target: torch.Tensor,
    evaluation: tuple[tuple[Batcher, int], torch.Tensor] | None,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    patience: int,
    seed: int,
) -> tuple[int, list[float]]:
    """Adam on mean squared error; minibatches shuffled by a generator seeded with ``seed``.

    ``train`` and the inputs of ``evaluation`` are (batcher, number of rows). With ``evaluation``
    (validation inputs and targets) training stops after ``patience`` epochs without improvement of the
    validation loss and the best epoch's weights are restored (early stopping sees validation data
    only). Returns (best epoch, validation losses per epoch)."""
    loss_fn = nn.functional.mse_loss
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    batcher, n = train
    best, best_epoch, best_state, history = float("inf"), epochs, None, []
    for epoch in range(epochs):
        module.train()
        perm = torch.randperm(n, generator=gen).to(target.device)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            if len(idx) < 2 and n >= 2:
                continue  # a lone last row gives a noisy step; its rows are seen in other epochs
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(module(*batcher(idx)), target[idx])
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), 5.0)
            opt.step()
        if evaluation is not None:
            val = float(loss_fn(forward(module, *evaluation[0]), evaluation[1]))
            history.append(val)
            if val < best - 1e-9:
                best, best_epoch, best_state = val, epoch + 1, copy.deepcopy(module.state_dict())
            elif epoch + 1 - best_epoch >= patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return best_epoch, history


@torch.no_grad()
def forward(module: nn.Module, batcher: Batcher, n: int, *, batch_size: int = 4096) -> torch.Tensor:
    module.eval()
    device = next(module.parameters()).device
    return torch.cat(
        [module(*batcher(torch.arange(i, min(i + batch_size, n), device=device))) for i in range(0, n, batch_size)]
    )


def state_bytes(module: nn.Module) -> bytes:
    """The module's parameters and buffers as safetensors bytes (no pickle). Each entry is copied, so
    parameters shared between layers (TabNet's shared GLU blocks) are stored once per name; loading
    writes the same values into the shared parameter."""
    from safetensors.torch import save

    return save({k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()})


def load_state_bytes(module: nn.Module, payload: bytes) -> None:
    from safetensors.torch import load

    module.load_state_dict(load(payload))
