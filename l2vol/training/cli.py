"""``l2vol tune``: black-box tuning with differential evolution (LightGBM hyperparameters, ensemble weights).

Mounted on the main CLI as ``app.add_typer(tune_app, name="tune")``. The training layer may not import
:mod:`l2vol.cli` (import-linter ``learning`` contract), so the few CLI helpers (rich progress on stderr, one-line
errors with exit code 2, ``--json`` on stdout) are repeated here in minimal form. Nothing heavy (torch, LightGBM,
pandas) is imported until a command runs, so ``import l2vol.cli`` stays light.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

tune_app = typer.Typer(
    help="Black-box tuning with differential evolution: LightGBM hyperparameters and ensemble blend weights, "
    "both on validation QLIKE (train and validation rows only; no test data).",
    no_args_is_help=True,
)

_console = Console(stderr=True)
_out = Console()

ConfigOpt = Annotated[Path, typer.Option("--config", help="YAML config file.", exists=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


@contextmanager
def _progress():
    from l2vol.progress import rich_progress

    with rich_progress(_console) as p:
        yield p


@contextmanager
def _user_errors():
    """Expected failures (bad config, missing file or column, bad ranges) → one line on stderr, exit code 2."""
    try:
        yield
    except (ValueError, KeyError, FileNotFoundError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        _console.print(f"[bold red]error:[/bold red] {msg}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _emit(doc: dict, as_json: bool, summary: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        _out.print(summary, highlight=False)


@tune_app.command("lightgbm")
def tune_lightgbm_cmd(config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Tune LightGBM hyperparameters on validation QLIKE; writes best_params.json, history.json, convergence.png."""
    from l2vol.training.tune import load_tune_lightgbm_config, tune_lightgbm

    with _user_errors():
        cfg = load_tune_lightgbm_config(config)
        with _progress() as progress:
            doc = tune_lightgbm(cfg, progress=progress)
    _emit(
        doc,
        as_json,
        f"validation QLIKE: tuned {doc['val_qlike_best']:.6f} vs default {doc['val_qlike_default']:.6f} "
        f"({doc['evaluations']} evaluations) → {Path(cfg.out) / 'best_params.json'}",
    )


@tune_app.command("ensemble")
def tune_ensemble_cmd(config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Tune convex ensemble weights on validation QLIKE; writes weights.json, history.json, convergence.png."""
    from l2vol.training.tune import load_tune_ensemble_config, tune_ensemble

    with _user_errors():
        cfg = load_tune_ensemble_config(config)
        with _progress() as progress:
            doc = tune_ensemble(cfg, progress=progress)
    _emit(
        doc,
        as_json,
        f"validation QLIKE: DE {doc['val_qlike_de']:.6f}, least squares {doc['val_qlike_least_squares']:.6f}, "
        f"equal {doc['val_qlike_equal']:.6f} → {Path(cfg.out) / 'weights.json'}",
    )
