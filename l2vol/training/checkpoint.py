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
import queue
import random
import re
import threading
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


def snapshot(obj: Any) -> Any:
    """A private copy of a checkpoint state taken at this instant: dicts, lists and tuples copied, tensors cloned
    (to the CPU, where :func:`load` puts them anyway), primitives shared. The caller may then go on changing its own
    tensors and containers (training in place) while the copy is written."""
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        return t.clone() if t.device.type == "cpu" else t.to("cpu")
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [snapshot(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(snapshot(v) for v in obj)
    return obj


class CheckpointWriteError(RuntimeError):
    """A checkpoint written in the background could not be written; raised by :meth:`BackgroundWriter.join`."""


class BackgroundWriter:
    """Writes checkpoints on one background thread, one at a time, so the caller does not wait for serialization
    and ``fsync``.

    :meth:`submit` first waits for the previous write (so at most one is pending and they land in order), takes a
    :func:`snapshot` of the state on the caller's thread, and queues the write (:func:`save`: atomic, prunes to the
    ``keep`` newest) to the writer thread, which is started once and then waits for work (starting a thread per
    checkpoint would make the caller wait for the new thread to be scheduled). :meth:`join` waits for the pending
    write and raises :class:`CheckpointWriteError` (the file and the cause) if it failed; an error is raised once,
    by the first join after it. Call :meth:`join` before anything that must see the checkpoint on disk (a collective
    whose peers may resume from it, the end of the run), and :meth:`close` when done.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._error: tuple[str, BaseException] | None = None

    @property
    def pending(self) -> bool:
        return not self._idle.is_set()

    def submit(self, out: str, rank: int, generation: int, state: dict[str, Any], *, keep: int = KEEP) -> None:
        self.join()
        copied = snapshot(state)
        _, d = rank_dir(out, rank)
        self._idle.clear()
        self._jobs.put((_path(d, generation), (out, rank, generation, copied), keep))
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=f"l2vol-checkpoint-rank{rank}", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            where, args, keep = job
            try:
                save(*args, keep=keep)
            except BaseException as exc:  # handed to the caller's thread by join()
                self._error = (where, exc)
            finally:
                self._idle.set()

    def join(self) -> None:
        """Wait for the pending write; raise :class:`CheckpointWriteError` if it (or an earlier one) failed."""
        self._idle.wait()
        if self._error is not None:
            where, exc = self._error
            self._error = None
            raise CheckpointWriteError(
                f"checkpoint {where}: writing it in the background failed: {type(exc).__name__}: {exc}"
            ) from exc

    def close(self) -> None:
        """Wait for the pending write (raising its error) and stop the writer thread."""
        try:
            self.join()
        finally:
            if self._thread is not None:
                self._jobs.put(None)
                self._thread.join()
                self._thread = None


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
