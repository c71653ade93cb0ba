"""Per-rank, per-generation checkpoints of a training run, written atomically and loaded without pickle.

Layout: ``{out}/checkpoints/rank{r}/gen{g:06d}.pt`` where ``g`` is the number of completed generations. Each rank
writes its own file (its individuals, their optimizers, its RNG states, plus the replicated DE state, elite and
history) and keeps the newest :data:`KEEP` files: ranks run in lockstep through collectives, so when a run dies
their newest generations differ by at most one and the newest generation every rank holds is always still there.

Files are ``torch.save`` archives of tensors, dicts, lists and primitives only, read back with
``torch.load(weights_only=True)``: a checkpoint cannot execute code when loaded. Local paths (and ``file://``) are
written to a temporary file, fsynced and renamed into place; ``s3://`` objects are written with a single PUT, which
S3 makes visible atomically.
"""

from __future__ import annotations

import io
import os
import pickle
import posixpath
import random
import re
from typing import Any

import numpy as np

KEEP = 2
FORMAT = 1
_GEN_FILE = re.compile(r"^gen(\d{6,})\.pt$")


def _fs(out: str):
    from l2vol.storage.uri import open_filesystem

    return open_filesystem(out)


def _is_local(fs) -> bool:
    import pyarrow.fs as pafs

    return isinstance(fs, pafs.LocalFileSystem)


def rank_dir(out: str, rank: int) -> tuple[Any, str]:
    """The filesystem and directory holding ``rank``'s checkpoints under the run output ``out``."""
    fs, root = _fs(out)
    return fs, posixpath.join(root, "checkpoints", f"rank{rank}")


def list_generations(out: str, rank: int) -> list[int]:
    """Completed-generation numbers of ``rank``'s checkpoints, ascending (empty when there are none)."""
    import pyarrow.fs as pafs

    fs, d = rank_dir(out, rank)
    infos = fs.get_file_info(pafs.FileSelector(d, allow_not_found=True))
    gens = []
    for info in infos:
        m = _GEN_FILE.match(posixpath.basename(info.path))
        if m and info.type == pafs.FileType.File:
            gens.append(int(m.group(1)))
    return sorted(gens)


def _path(d: str, generation: int) -> str:
    return posixpath.join(d, f"gen{generation:06d}.pt")


def save(out: str, rank: int, generation: int, state: dict[str, Any], *, keep: int = KEEP) -> str:
    """Write ``state`` as ``rank``'s checkpoint after ``generation`` completed generations; prune older ones.

    ``state`` must hold only tensors, dicts, lists, tuples and primitives (what ``weights_only`` loading accepts).
    Returns the path written.
    """
    import torch

    payload = {"format": FORMAT, "rank": rank, "generation": generation, **state}
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    fs, d = rank_dir(out, rank)
    path = _path(d, generation)
    if _is_local(fs):
        os.makedirs(d, exist_ok=True)
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself survives a power loss
        finally:
            os.close(dfd)
    else:
        with fs.open_output_stream(path) as fh:
            fh.write(data)
    gens = list_generations(out, rank)
    for g in gens[:-keep]:
        fs.delete_file(_path(d, g))
    return path


def load(out: str, rank: int, generation: int, *, map_location: str = "cpu") -> dict[str, Any]:
    """Read ``rank``'s checkpoint of ``generation`` (``weights_only=True``); errors name the file."""
    import torch

    fs, d = rank_dir(out, rank)
    path = _path(d, generation)
    try:
        with fs.open_input_stream(path) as fh:
            data = fh.read()
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ValueError(f"checkpoint {path}: cannot be read ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path}: not a format-{FORMAT} l2vol checkpoint")
    if state.get("rank") != rank or state.get("generation") != generation:
        raise ValueError(
            f"checkpoint {path}: holds rank {state.get('rank')} generation {state.get('generation')}, "
            f"expected rank {rank} generation {generation}"
        )
    return state


def clear(out: str, rank: int) -> None:
    """Delete ``rank``'s checkpoints (a fresh run must not later resume from an older run's generations)."""
    fs, d = rank_dir(out, rank)
    for g in list_generations(out, rank):
        fs.delete_file(_path(d, g))


def rng_state() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and Python ``random`` generator states, as tensors and primitives."""
    import torch

    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # noqa: NPY002 - the global state is what we restore
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state` output."""
    import torch

    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (n["name"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
