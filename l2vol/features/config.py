"""Which Feast configuration a command uses, and where the offline Parquet copy lives.

``L2VOL_FEAST_ENV`` selects the variant of ``feature_repo/``:

``local`` (default)  ``feature_store.yaml``: file registry, SQLite online store, Parquet offline store,
                     all under ``feature_repo/data/``.
``cluster``          ``feature_store.cluster.yaml``: SQL registry on PostgreSQL, Redis online store, Parquet
                     on S3. Its endpoints come from the environment (never from git):
                     ``L2VOL_FEAST_PROJECT``, ``L2VOL_FEAST_REGISTRY_URL``, ``L2VOL_FEAST_REDIS``,
                     ``L2VOL_FEAST_OFFLINE_ROOT`` and, for S3, ``L2VOL_S3_ENDPOINT`` + AWS credentials.

This module does not import feast, so the CLI can resolve paths without paying for it.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "L2VOL_FEAST_ENV"
OFFLINE_ROOT_VAR = "L2VOL_FEAST_OFFLINE_ROOT"
YAML_FILES = {"local": "feature_store.yaml", "cluster": "feature_store.cluster.yaml"}
#: Variables the cluster YAML expands (``${VAR}``); a missing one is an error, not a literal "${VAR}".
CLUSTER_VARS = ("L2VOL_FEAST_PROJECT", "L2VOL_FEAST_REGISTRY_URL", "L2VOL_FEAST_REDIS", OFFLINE_ROOT_VAR)
DEFAULT_OFFLINE_ROOT = "data/offline"


def feast_env(env: str | None = None) -> str:
    """The selected variant: ``env`` if given, else ``$L2VOL_FEAST_ENV``, else ``local``."""
    name = (env or os.environ.get(ENV_VAR) or "local").strip().lower()
    if name not in YAML_FILES:
        raise ValueError(f"{ENV_VAR}={name!r}: unknown Feast environment; known: {', '.join(YAML_FILES)}")
    return name


def store_yaml(repo_dir: str | Path, env: str | None = None) -> Path:
    """The feature_store YAML of ``repo_dir`` for the selected variant (checked to exist, with its variables)."""
    name = feast_env(env)
    path = Path(repo_dir) / YAML_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no Feast configuration for environment {name!r}")
    if name == "cluster":
        missing = [v for v in CLUSTER_VARS if not os.environ.get(v)]
        if missing:
            raise ValueError(f"{path}: environment {name!r} needs {', '.join(missing)} set (see the file's header)")
    return path


def offline_root(repo_dir: str | Path) -> str:
    """Root of the Feast-readable Parquet copy of the factor tables: ``$L2VOL_FEAST_OFFLINE_ROOT``
    (a URI such as ``s3://bucket/feast/offline``, or a path, relative paths taken from ``repo_dir``),
    default ``<repo_dir>/data/offline``. feature_repo/definitions.py applies the same rule."""
    root = os.environ.get(OFFLINE_ROOT_VAR, DEFAULT_OFFLINE_ROOT).rstrip("/")
    if "://" in root:
        return root
    return str((Path(repo_dir).resolve() / root).resolve())


def quiet_native_exit() -> None:
    """Discard what native extensions print while the interpreter shuts down.

    After Feast's DuckDB offline store ran, DuckDB 2's bindings (nanobind) report the type objects that
    ibis keeps in module-level caches as "leaked" when those modules are torn down: dozens of lines on
    stderr after the command has finished and printed its result. Registered last, this runs first at
    exit, once every result and error of the command is already written.
    """
    import atexit
    import os
    import sys

    def _close_stderr() -> None:
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)

    atexit.register(_close_stderr)
