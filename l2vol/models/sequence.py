"""Sequence model: LSTM + self-attention over the last k buckets of each symbol, with symbol and
industry embeddings (seeds 003/004: LayerNorm, never BatchNorm across time)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from l2vol.models.base import as_matrix, require_columns
from l2vol.models.neural import TorchRegressor

SEQUENCE_KEYS = ("symbol", "ts", "industry")


def causal_window_index(symbols: np.ndarray, ts: np.ndarray, k: int) -> np.ndarray:
    """Row positions of each row's causal window: for row i, the positions of the last ``k`` rows of the
    same symbol with ``ts`` at or before ``ts[i]``, oldest first, ``i`` itself last; -1 where the symbol
    has fewer earlier rows (left padding). Shape (n, k); rows in any order; a duplicate (symbol, ts) is
    refused (the order inside the window would be ambiguous)."""
    n = len(symbols)
    if k < 1:
        raise ValueError(f"window length k={k} must be >= 1")
    sym_codes, _ = pd.factorize(pd.Series(symbols), sort=True)
    ts_key = pd.DatetimeIndex(pd.to_datetime(pd.Series(ts), utc=True)).as_unit("ns").asi8
    order = np.lexsort((ts_key, sym_codes))
    s_sym, s_ts = sym_codes[order], ts_key[order]
    same = (s_sym[1:] == s_sym[:-1]) & (s_ts[1:] == s_ts[:-1])
    if same.any():
        i = order[1:][same][0]
        raise ValueError(f"row {int(i)}: duplicate (symbol, ts) = ({symbols[i]}, {ts[i]}); windows need one row each")
    starts = np.r_[True, s_sym[1:] != s_sym[:-1]] if n else np.zeros(0, bool)
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    src = np.arange(n)[:, None] + np.arange(-(k - 1), 1)[None, :]
    valid = src >= group_start[:, None]
    out = np.empty((n, k), dtype=np.int64)
    out[order] = np.where(valid, order[np.where(valid, src, 0)], -1)
    return out


def causal_windows(values: np.ndarray, symbols: np.ndarray, ts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Causal windows of a panel: for each row, the feature rows of the same symbol with ``ts`` at or
    before the row's ``ts`` — the last ``k`` of them, oldest first, the row itself last.

    ``values`` is (n, f), ``symbols`` and ``ts`` are (n,) in any row order. Returns ``windows``
    (n, k, f), in the input row order, left-padded with zeros where a symbol has fewer than k earlier
    rows, and ``pad`` (n, k), True at padded positions. Rows of other symbols and rows with a later
    ``ts`` never enter a window (see :func:`causal_window_index`)."""
    values = np.asarray(values)
    idx = causal_window_index(symbols, ts, k)
    pad = idx < 0
    return np.where(pad[..., None], 0, values[np.where(pad, 0, idx)]), pad


class LSTMAttentionRegressor(TorchRegressor):
    """LSTM + self-attention forecaster of log RV from a symbol's last ``window`` buckets of factors.

    ``X`` is a panel with a ``symbol`` and a ``ts`` column (and optionally ``industry``) plus the feature
    columns. Each row's input is :func:`causal_windows` of the standardized features: only rows of the
    same symbol at or before the row's ``ts``, taken from the ``X`` given to fit/predict (pass the
    preceding buckets along at predict time for full windows; missing history is zero-padded and
    masked from attention). Network: :class:`l2vol.models._nets.LSTMAttentionNet`. Symbols and industries
    unseen in training map to the id 0 (a learned "unknown" embedding)."""

    name: ClassVar[str] = "lstm"

    def __init__(
        self,
        *,
        features: Sequence[str] | None = None,
        window: int = 16,
        hidden: int = 32,
        heads: int = 2,
        symbol_dim: int = 8,
        industry_dim: int = 4,
        head_hidden: int = 32,
        dropout: float = 0.1,
        epochs: int = 50,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        patience: int = 8,
        seed: int = 0,
        device: str = "auto",
        bias_correction: str = "ratio",
    ):
        self.features = features
        self.window = window
        self.hidden = hidden
        self.heads = heads
        self.symbol_dim = symbol_dim
        self.industry_dim = industry_dim
        self.head_hidden = head_hidden
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.seed = seed
        self.device = device
        self.bias_correction = bias_correction

    @classmethod
    def debug_params(cls) -> dict[str, Any]:
        return {
            "window": 4,
            "hidden": 8,
            "heads": 2,
            "symbol_dim": 4,
            "industry_dim": 2,
            "head_hidden": 8,
            "epochs": 8,
            "batch_size": 64,
            "lr": 5e-3,
            "patience": 4,
        }

    def _fit_extra(self, X: pd.DataFrame) -> None:
        require_columns(X, ["symbol", "ts"], "LSTMAttentionRegressor")
        self.symbols_ = sorted(map(str, pd.unique(X["symbol"])))
        self.industries_ = (
            sorted(map(str, pd.unique(X["industry"].dropna()))) if "industry" in X.columns and self.industry_dim else []
        )

    def _extra_state(self) -> dict[str, Any]:
        return {"symbols_": self.symbols_, "industries_": self.industries_}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        self.symbols_, self.industries_ = state["symbols_"], state["industries_"]

    @staticmethod
    def _ids(values: pd.Series, vocab: list[str]) -> np.ndarray:
        codes = pd.Categorical(values.astype("string"), categories=vocab).codes  # -1: unseen or missing
        return codes.astype(np.int64) + 1

    def windows(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The standardized causal windows (n, window, features) and padding mask of ``X``'s rows."""
        require_columns(X, ["symbol", "ts"], "LSTMAttentionRegressor")
        x = self.normalizer_.transform(as_matrix(X, self.features_))
        return causal_windows(x, X["symbol"].to_numpy(), X["ts"].to_numpy(), self.window)

    def _batcher(self, X: pd.DataFrame, rows: np.ndarray):
        import torch

        require_columns(X, ["symbol", "ts"], "LSTMAttentionRegressor")
        dev = self.device_
        x = self.normalizer_.transform(as_matrix(X, self.features_))
        # Row 0 of `table` is the zero padding row; window positions shift by one.
        table = torch.as_tensor(np.vstack([np.zeros((1, x.shape[1]), np.float32), x])).to(dev)
        widx = torch.as_tensor(causal_window_index(X["symbol"].to_numpy(), X["ts"].to_numpy(), self.window)[rows] + 1)
        widx = widx.to(dev)
        sym = torch.as_tensor(self._ids(X["symbol"], self.symbols_)[rows]).to(dev)
        ind = (
            self._ids(X["industry"], self.industries_)[rows]
            if self.industries_ and "industry" in X.columns
            else np.zeros(len(rows), dtype=np.int64)
        )
        ind = torch.as_tensor(ind).to(dev)

        def batch(i: torch.Tensor) -> list[torch.Tensor]:
            w = widx[i]
            return [table[w], w == 0, sym[i], ind[i]]

        return batch

    def _module(self):
        from l2vol.models._nets import LSTMAttentionNet

        return LSTMAttentionNet(
            len(self.features_),
            hidden=self.hidden,
            heads=self.heads,
            n_symbols=len(self.symbols_),
            symbol_dim=self.symbol_dim,
            n_industries=len(self.industries_),
            industry_dim=self.industry_dim if self.industries_ else 0,
            head_hidden=self.head_hidden,
            dropout=self.dropout,
        )
