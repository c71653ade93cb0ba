"""Whole-universe online reads straight from the online store: the fast batch path.

The Feast SDK spends most of a 300-symbol read in Python per value (protobuf objects, type conversion,
response building). :class:`BatchOnlineReader` reads the same rows with one query (SQLite: one
``UNION ALL`` over the feature views' tables with ``entity_key IN (...)``; Redis: one pipelined round trip
of ``HMGET`` per symbol over every feature of the service, since all views of an entity share one hash)
and decodes the values in bulk: a float64 ``Value`` proto is 9 bytes (tag 0x29 + little-endian double),
so all of them are viewed as one numpy array; anything else (int64, nulls) is parsed by protobuf.

It relies on Feast's storage layout for these two stores (entity keys serialized with
``serialize_entity_key``; SQLite tables ``<project>_<view>`` keyed by (entity_key, feature_name); Redis
hashes at ``<entity key><project>`` with murmur3 field names ``<view>:<feature>``); the tests compare it
with the SDK on both stores, so a layout change in a Feast upgrade fails them.
"""

from __future__ import annotations

import sqlite3
from itertools import chain, compress
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from l2vol.features.store import DEFAULT_SERVICE, open_store

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

_DOUBLE_TAG = 0x29  # field 5 (double_val), wire type 1 (64-bit)


class BatchOnlineReader:
    """Reads the online features of one feature service for many symbols at once.

    Build it once (it resolves the service's views and features, and opens its own connection) and call
    :meth:`read` per request. Values equal :func:`l2vol.features.online`'s; columns are ``symbol`` then
    the service's features in the SDK's order; a symbol without online rows gets nulls.
    """

    def __init__(self, store: FeatureStore, service: str = DEFAULT_SERVICE):
        from feast.infra.online_stores.helpers import _mmh3

        self.store = store
        self.project = store.project
        cfg = store.config
        if cfg.registry.enable_online_feature_view_versioning:
            raise ValueError("BatchOnlineReader: online feature-view versioning is not supported")
        self.kind = cfg.online_store.type
        svc = store.get_feature_service(service)
        self.views: list[tuple[str, list[str]]] = []
        types: dict[str, bool] = {}
        for proj in svc.feature_view_projections:
            fv = store.get_feature_view(proj.name)
            entities = list(fv.entities)
            if entities != ["symbol"]:
                raise ValueError(f"feature view {fv.name!r}: entities {entities}, the batch path reads 'symbol' only")
            names = [f.name for f in proj.features]
            self.views.append((proj.name, names))  # storage is keyed by the view name, not an alias
            for f in proj.features:
                types[f.name] = str(f.dtype) == "Int64"
        self.columns = [n for _, names in self.views for n in names]
        self._col = {n: i for i, n in enumerate(self.columns)}
        self._col_or_skip = lambda name: self._col.get(name, -1)
        self._is_int = np.array([types[n] for n in self.columns])
        self._keys: dict[str, bytes] = {}
        self._queries: dict[int, str] = {}
        self._ek_version = cfg.entity_key_serialization_version
        if self.kind == "sqlite":
            path = Path(cfg.online_store.path)
            if not path.is_absolute():
                path = Path(cfg.repo_path) / path
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            self._tables = [f"{self.project}_{view}" for view, _ in self.views]
        elif self.kind == "redis":
            self._redis = store._get_provider().online_store._get_client(cfg.online_store)
            self._fields = [_mmh3(f"{view}:{n}") for view, names in self.views for n in names]
            self._project_bytes = self.project.encode()
        else:
            raise ValueError(f"BatchOnlineReader: online store {self.kind!r} is not supported (sqlite, redis)")

    def entity_key(self, symbol: str) -> bytes:
        """Feast's serialized entity key of ``symbol`` (cached)."""
        key = self._keys.get(symbol)
        if key is None:
            from feast.infra.key_encoding_utils import serialize_entity_key
            from feast.protos.feast.types.EntityKey_pb2 import EntityKey
            from feast.protos.feast.types.Value_pb2 import Value

            ek = EntityKey(join_keys=["symbol"], entity_values=[Value(string_val=symbol)])
            key = serialize_entity_key(ek, entity_key_serialization_version=self._ek_version)
            self._keys[symbol] = key
        return key

    # ---------------------------------------------------------------------------------------- raw reads
    def sqlite_query(self, n: int) -> str:
        """One statement over the views' tables for ``n`` keys (bound once per table): the primary key
        (entity_key, feature_name) serves every ``IN`` lookup."""
        query = self._queries.get(n)
        if query is None:
            marks = ",".join("?" * n)
            query = " UNION ALL ".join(
                f'SELECT entity_key, feature_name, value FROM "{t}" WHERE entity_key IN ({marks})' for t in self._tables
            )
            self._queries[n] = query
        return query

    def fetch_raw(self, symbols: list[str]) -> tuple[np.ndarray, np.ndarray, list]:
        """(row index, column index, serialized value) of every stored value for ``symbols`` (distinct)."""
        keys = [self.entity_key(s) for s in symbols]
        if self.kind == "sqlite":
            rows = self._conn.execute(self.sqlite_query(len(keys)), keys * len(self._tables)).fetchall()
            if not rows:
                return np.zeros(0, np.int64), np.zeros(0, np.int64), []
            eks, names, blobs = zip(*rows, strict=True)
            pos = {k: i for i, k in enumerate(keys)}
            r = np.fromiter(map(pos.__getitem__, eks), dtype=np.int64, count=len(rows))
            c = np.fromiter(map(self._col_or_skip, names), dtype=np.int64, count=len(rows))
            keep = c >= 0
            if not keep.all():  # a feature of the view that the service does not project
                return r[keep], c[keep], list(compress(blobs, keep))
            return r, c, list(blobs)
        with self._redis.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hmget(k + self._project_bytes, self._fields)
            replies = pipe.execute()
        n = len(self.columns)
        r = np.repeat(np.arange(len(keys)), n)
        c = np.tile(np.arange(n), len(keys))
        return r, c, [b or b"" for b in chain.from_iterable(replies)]

    # ----------------------------------------------------------------------------------- decoded read
    def read(self, symbols: list[str]) -> pd.DataFrame:
        import pandas as pd

        distinct = list(dict.fromkeys(symbols))
        r, c, blobs = self.fetch_raw(distinct)
        out = np.full((len(distinct), len(self.columns)), np.nan)
        if blobs:
            lens = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
            nine = lens == 9
            fast = np.zeros(len(blobs), dtype=bool)
            if nine.any():
                raw = np.frombuffer(b"".join(compress(blobs, nine)), dtype=np.uint8).reshape(-1, 9)
                is_double = raw[:, 0] == _DOUBLE_TAG
                vals = raw[is_double, 1:].copy().view("<f8").ravel()
                idx = np.flatnonzero(nine)[is_double]
                out[r[idx], c[idx]] = vals
                fast[idx] = True
            rest = np.flatnonzero(~fast & (lens > 0))
            if len(rest):
                from feast.protos.feast.types.Value_pb2 import Value

                for i in rest:
                    v = Value.FromString(blobs[i])
                    kind = v.WhichOneof("val")
                    if kind in ("double_val", "float_val", "int64_val", "int32_val"):
                        out[r[i], c[i]] = getattr(v, kind)
        if len(distinct) != len(symbols):
            where = {s: i for i, s in enumerate(distinct)}
            out = out[[where[s] for s in symbols]]
        df = pd.DataFrame(out, columns=self.columns)
        for name in compress(self.columns, self._is_int):
            df[name] = df[name].astype("Int64")
        df.insert(0, "symbol", list(symbols))
        return df


_READERS: dict[tuple, BatchOnlineReader] = {}


def online_batch(
    repo_dir: str | Path, symbols: list[str], service: str = DEFAULT_SERVICE, *, env: str | None = None
) -> pd.DataFrame:
    """The online features of ``service`` for ``symbols`` through :class:`BatchOnlineReader` (cached per
    store and service): same values as :func:`l2vol.features.online`, one row per symbol in order."""
    store = open_store(repo_dir, env=env)
    key = (id(store), service)
    reader = _READERS.get(key)
    if reader is None or reader.store is not store:
        reader = _READERS[key] = BatchOnlineReader(store, service)
    return reader.read(symbols)
