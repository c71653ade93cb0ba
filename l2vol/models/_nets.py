"""Torch networks of the neural models (imported lazily: this module imports torch)."""

from __future__ import annotations

import torch
from torch import nn


class MLPNet(nn.Module):
    """Linear → LayerNorm → GELU → Dropout blocks, then a linear output; returns shape (batch,)."""

    def __init__(self, n_features: int, hidden: tuple[int, ...], dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        d = n_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(dropout)]
            d = h
        layers.append(nn.Linear(d, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)


class LSTMAttentionNet(nn.Module):
    """LSTM over a causal window of k buckets, self-attention from the last bucket over the window,
    symbol and industry embeddings, and an MLP head on the residual concatenation
    ``[LSTM output at the last bucket, attention output, embeddings]``.

    Inputs: ``x`` (batch, k, features) left-padded with zeros, ``pad`` (batch, k) True where padded,
    ``symbol`` and ``industry`` (batch,) integer ids (0 = unknown). LayerNorm only: no statistic is
    shared across rows or time."""

    def __init__(
        self,
        n_features: int,
        *,
        hidden: int,
        heads: int,
        n_symbols: int,
        symbol_dim: int,
        n_industries: int,
        industry_dim: int,
        head_hidden: int,
        dropout: float,
    ):
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, batch_first=True)
        self.lstm_norm = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.attn_norm = nn.LayerNorm(hidden)
        self.symbol = nn.Embedding(n_symbols + 1, symbol_dim)
        self.industry = nn.Embedding(n_industries + 1, industry_dim) if industry_dim else None
        width = 2 * hidden + symbol_dim + industry_dim
        self.head = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, head_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(head_hidden, 1),
        )

    def forward(self, x: torch.Tensor, pad: torch.Tensor, symbol: torch.Tensor, industry: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(x)
        h = self.lstm_norm(h)
        last = h[:, -1:, :]  # the row's own bucket (always present: windows end at the row)
        a, _ = self.attn(last, h, h, key_padding_mask=pad, need_weights=False)
        a = self.attn_norm(a[:, 0, :] + last[:, 0, :])
        parts = [last[:, 0, :], a, self.symbol(symbol)]
        if self.industry is not None:
            parts.append(self.industry(industry))
        return self.head(torch.cat(parts, dim=-1)).squeeze(-1)
