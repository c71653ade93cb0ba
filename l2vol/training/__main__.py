"""``python -m l2vol.training --config FILE [--algorithm A]``: the one entrypoint every launcher runs.

Reads the process group from the environment (single process, ``torchrun``, PyTorchJob, TrainJob), trains, and
on rank 0 writes ``{out}/model``, ``{out}/metrics.json`` and ``{out}/history.png`` (see
:mod:`l2vol.training.harness`). Rank 0 prints progress; an error exits non-zero with a one-line message.
"""

from __future__ import annotations

import argparse
import os
import sys

from l2vol.training.config import ALGORITHMS


def main(argv: list[str] | None = None, *, forced_algorithm: str | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m l2vol.training", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="training config (YAML, l2vol.training.config.TrainConfig)")
    if forced_algorithm is None:
        p.add_argument("--algorithm", choices=ALGORITHMS, help="override the config's algorithm")
    args = p.parse_args(argv)
    rank = os.environ.get("RANK", "0")
    try:
        from l2vol.training.config import load_train_config
        from l2vol.training.harness import PrintProgress, run

        config = load_train_config(args.config)
        algorithm = forced_algorithm or args.algorithm
        if algorithm:
            config = config.model_copy(update={"algorithm": algorithm})
        main_rank = rank in ("", "0")
        metrics = run(config, progress=PrintProgress() if main_rank else None)
        if main_rank:
            test = metrics.get("test") or {}
            t = metrics["timings"]
            print(
                f"done: {config.model} {config.algorithm} x{metrics['world_size']}: "
                f"val loss {metrics['val']['loss']:.4f}"
                + (f", test qlike {test['qlike']:.4f} rmspe {test['rmspe']:.4f}" if test else "")
                + f", wall {t['wall_s']:.1f}s (DE+comm {100 * t['de_comm_share']:.1f}%) -> {config.out}",
                flush=True,
            )
        return 0
    except KeyboardInterrupt:
        print(f"error (rank {rank}): interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # one line for the operator; the launcher shows the failing rank's log tail
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error (rank {rank}): {type(exc).__name__}: {msg}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    from l2vol.training.dist import exit_process

    exit_process(main())
