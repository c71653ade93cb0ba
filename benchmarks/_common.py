"""Shared helpers for benchmark scripts: argument parsing, peak RSS, JSON output, the summary line.

Every benchmark accepts ``--quick`` (small sizes, under a minute) and ``--json PATH`` (its figures as
JSON), prints its figures, and ends with exactly one line starting with ``SUMMARY``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON to PATH")
    return p


def peak_rss_mib() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def children_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def finish(name: str, figures: dict, summary: str, json_path: str | None) -> None:
    """Print the figures, write JSON if asked, and print the one summary line last."""
    for k, v in figures.items():
        print(f"{k:>40}: {v:.4g}" if isinstance(v, float) else f"{k:>40}: {v}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        payload = {"benchmark": name, "pid": os.getpid(), "figures": figures, "summary": summary}
        Path(json_path).write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"SUMMARY {name}: {summary}")
