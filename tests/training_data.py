"""Small bucket panels for the training-harness tests (Task, baselines, Parallel_DE, launchers)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def training_panel(seed: int, *, n_sym: int = 4, n_ts: int = 120, zero_every: int = 31, extras: bool = False):
    """Rows keyed by (symbol, ts) at 5-minute bucket ends with factor columns ``a``, ``b``, ``c`` and the next
    bucket's realized variance, whose log depends on ``a`` and ``b`` (``c`` is noise). Every ``zero_every``-th
    target is zero (a halted bucket, left out of losses).

    ``extras``: also an ``industry`` key, another horizon's target (``rv_next_day``: look-ahead if it were used as
    a feature), a missing target and the ``zero_next_bucket`` flag.
    """
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-02 01:30", periods=n_ts, freq="5min", tz="UTC")
    frames = []
    for s in range(n_sym):
        f = rng.normal(size=(n_ts, 3))
        rv = np.exp(-8 + 0.8 * f[:, 0] - 0.4 * f[:, 1] + 0.3 * rng.normal(size=n_ts))
        cols = {"symbol": f"S{s}", "ts": ts, "a": f[:, 0], "b": f[:, 1], "c": f[:, 2], "rv_next_bucket": rv}
        if extras:
            cols = {"industry": f"I{s % 2}", **cols, "rv_next_day": rv * 40}
        frames.append(pd.DataFrame(cols))
    df = pd.concat(frames, ignore_index=True)
    df.loc[::zero_every, "rv_next_bucket"] = 0.0
    if extras:
        df.loc[5, "rv_next_bucket"] = np.nan
        df["zero_next_bucket"] = df["rv_next_bucket"] == 0
    return df


def single_symbol_frame(n: int, seed: int) -> pd.DataFrame:
    """``n`` one-minute rows of one symbol whose log RV depends on two of four features (``f0``..``f3``) plus
    noise: a network learns it in a few steps."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(4)])
    df["symbol"] = "600000.XSHG"
    df["ts"] = pd.date_range("2024-01-02 09:30", periods=n, freq="min")
    df["rv_next_bucket"] = np.exp(-8 + 0.5 * x[:, 0] - 0.3 * x[:, 1] + 0.2 * rng.normal(size=n))
    return df


def rank_env(base: dict[str, str], rank: int, world: int, port: int, **extra: str) -> dict[str, str]:
    """The environment torchrun (or a PyTorchJob pod) gives rank ``rank`` of ``world`` on loopback, one thread."""
    return {
        **base,
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
        **extra,
    }
