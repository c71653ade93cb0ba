"""Internals of the A-share Level2 market simulator; the public entry points are
:func:`l2vol.data.simulator.simulate_market` and :func:`l2vol.data.simulator.simulate_latent`.

Modules: ``grid`` (the day's snapshot grid, trading clock and seasonality), ``universe`` (static
cross-section, event schedule, index membership), ``latent`` (daily log-variance state and the intraday
efficient-price kernel shared by the full and the fast latent-only mode), ``book`` (level-2 snapshots),
``trades`` (tick-by-tick trades and orders), ``defects`` (defect injection from a separate stream).
"""
