"""Factor engine: registry of causal high-frequency volatility factors and targets."""
