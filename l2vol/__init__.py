"""l2vol: high-frequency volatility factors from China A-share Level2 data, and realized-volatility forecasts."""

from l2vol import _memory

_memory.configure()  # before anything imports polars or pyarrow (see l2vol._memory)
