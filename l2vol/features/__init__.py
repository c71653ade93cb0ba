"""Feast integration (the only l2vol package that imports feast, always inside functions).

* :func:`export_offline` — copy the committed ``factors`` partitions into the per-family Parquet layout
  the feature repo's sources read;
* :func:`apply`, :func:`materialize`, :func:`training_set`, :func:`online` — the Feast SDK operations on
  ``feature_repo/`` (local SQLite or cluster PostgreSQL/Redis, chosen by ``L2VOL_FEAST_ENV``);
* :func:`online_batch` / :class:`BatchOnlineReader` — whole-universe online reads straight from the
  online store (SQLite or Redis), returning the SDK's values several times faster.

See docs/features.md.
"""

from l2vol.features.batch import BatchOnlineReader, online_batch
from l2vol.features.config import feast_env, offline_root, quiet_native_exit, store_yaml
from l2vol.features.entities import entities_from_targets, write_training_set
from l2vol.features.export import export_offline
from l2vol.features.store import DEFAULT_SERVICE, apply, materialize, online, open_store, training_set

__all__ = [
    "DEFAULT_SERVICE",
    "BatchOnlineReader",
    "apply",
    "entities_from_targets",
    "export_offline",
    "feast_env",
    "materialize",
    "offline_root",
    "online",
    "online_batch",
    "open_store",
    "quiet_native_exit",
    "store_yaml",
    "training_set",
    "write_training_set",
]
