"""DatasetStore on file:// — partitions committed by a manifest written last.

What a reader may see is exactly what a manifest lists: a write that fails or is killed mid-partition
leaves no visible partition (and an older committed version unchanged), re-writes are idempotent,
and a damaged committed part fails loudly with its path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from l2vol.storage import MANIFEST, DatasetStore, StoreError

REPO = Path(__file__).resolve().parents[2]
D1, D2, D3 = dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4)
SYMBOLS = ("600519.SH", "000001.SZ", "688981.SH")

SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("price", pa.float64()),
        pa.field("qty", pa.int64()),
        # A column named like the partition key: reading must not mistake the path for hive columns.
        pa.field("date", pa.date32()),
    ]
)


def trades(day: dt.date, n: int = 30, *, version: int = 0, start: int = 0) -> pa.Table:
    """``n`` deterministic rows for ``day``, symbols round-robin; ``version`` shifts every price."""
    i = np.arange(start, start + n)
    t0 = pd.Timestamp(day).tz_localize("Asia/Shanghai").tz_convert("UTC") + pd.Timedelta(hours=9, minutes=30)
    return pa.table(
        {
            "symbol": [SYMBOLS[k % len(SYMBOLS)] for k in i],
            "ts": pa.array(t0 + pd.to_timedelta(i * 3, unit="s"), SCHEMA.field("ts").type),
            "price": 10.0 + 0.01 * i + version,
            "qty": 100 * (1 + i % 5),
            "date": [day] * n,
        },
        schema=SCHEMA,
    )


def pdir(store: DatasetStore, table: str, day: dt.date) -> Path:
    return Path(store.partition_path(table, day))


def files_in(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())} if path.exists() else {}


# ------------------------------------------------------------------------------------ write / read


def test_write_list_and_read_back(tmp_store):
    for day in (D1, D2, D3):
        info = tmp_store.write_partition("trades", day, trades(day), metadata={"source": "unit"})
        assert (info.table, info.date, info.rows) == ("trades", day, 30)
        assert info.manifest["metadata"] == {"source": "unit"}
    tmp_store.write_partition("snapshots", D2, trades(D2, 5))

    assert tmp_store.list_tables() == ["snapshots", "trades"]
    assert tmp_store.list_dates("trades") == [D1, D2, D3]
    assert tmp_store.list_dates("snapshots") == [D2]
    assert tmp_store.list_dates("orders") == []

    got = tmp_store.read_partition("trades", D2)
    assert got.equals(trades(D2))
    assert got.schema.equals(SCHEMA)
    whole = tmp_store.read("trades")
    assert whole.equals(pa.concat_tables([trades(d) for d in (D1, D2, D3)]))

    man = tmp_store.read_manifest("trades", D1)
    assert man["table"] == "trades" and man["date"] == "2024-01-02" and man["rows"] == 30
    assert man["schema"] == [[f.name, str(f.type)] for f in SCHEMA]
    assert sorted(p.name for p in pdir(tmp_store, "trades", D1).iterdir()) == sorted(
        [MANIFEST, *(f["name"] for f in man["files"])]
    )


def test_canonical_schema_round_trips_with_unit_metadata(tmp_store):
    from l2vol.data.schema import TRADES, conform

    ts = pd.date_range("2024-01-02 09:30", periods=4, freq="3s", tz="Asia/Shanghai")
    raw = pa.table({"symbol": ["600519.SH"] * 4, "ts": ts, "price": [1700.0, 1700.5, 1699.9, 1700.1], "qty": [100] * 4})
    tmp_store.write_partition("trades", D1, conform(raw, "trades"), schema=TRADES)
    got = tmp_store.read_partition("trades", D1)
    assert got.schema.equals(TRADES, check_metadata=True)
    assert got.schema.field("price").metadata[b"unit"] == b"CNY"
    assert got.column("ts").to_pylist()[0] == ts[0]  # same instant, stored in UTC


def test_column_projection(tmp_store):
    tmp_store.write_partition("trades", D1, trades(D1))
    got = tmp_store.read_partition("trades", D1, columns=["qty", "symbol"])
    assert got.column_names == ["qty", "symbol"]
    assert got.equals(trades(D1).select(["qty", "symbol"]))
    only_price = tmp_store.read("trades", columns=["price"])
    assert only_price.column_names == ["price"]


def test_symbol_subset_with_and_without_the_symbol_column(tmp_store):
    for day in (D1, D2):
        tmp_store.write_partition("trades", day, trades(day), max_rows_per_file=7)
    want = ["600519.SH", "688981.SH"]
    got = tmp_store.read("trades", symbols=want)
    full = pa.concat_tables([trades(D1), trades(D2)])
    expected = full.filter(pc.is_in(full["symbol"], pa.array(want)))
    assert got.equals(expected)
    # Filtering on symbol while projecting it away: the filter still applies, the column is not returned.
    projected = tmp_store.read_partition("trades", D1, columns=["price"], symbols=["000001.SZ"])
    assert projected.column_names == ["price"]
    t1 = trades(D1)
    assert projected.column("price").to_pylist() == [
        p for s, p in zip(t1["symbol"].to_pylist(), t1["price"].to_pylist(), strict=True) if s == "000001.SZ"
    ]
    assert tmp_store.read_partition("trades", D1, symbols=["999999.SH"]).num_rows == 0


def test_unknown_column_is_a_clear_error(tmp_store):
    tmp_store.write_partition("trades", D1, trades(D1))
    with pytest.raises(ValueError, match=r"table=trades/date=2024-01-02.*'bid_px_1'"):
        tmp_store.read_partition("trades", D1, columns=["bid_px_1"])


def test_date_range_is_inclusive_and_accepts_dates_strings_and_timestamps(tmp_store):
    days = [D1, D2, D3, dt.date(2024, 1, 5), dt.date(2024, 1, 8)]
    for day in days:
        tmp_store.write_partition("trades", day, trades(day, 6))
    assert tmp_store.list_dates("trades", D2, dt.date(2024, 1, 5)) == days[1:4]
    assert tmp_store.list_dates("trades", "2024-01-04") == days[2:]
    assert tmp_store.list_dates("trades", end=pd.Timestamp("2024-01-03")) == days[:2]
    assert [d for d, _ in tmp_store.iter_partitions("trades", "2024-01-03", "2024-01-05")] == days[1:4]
    got = tmp_store.read("trades", D2, D3)
    assert got.equals(pa.concat_tables([trades(D2, 6), trades(D3, 6)]))
    with pytest.raises(StoreError, match="no committed partitions in range"):
        tmp_store.read("trades", "2024-02-01", "2024-02-29")


def test_a_timestamp_partition_key_means_its_calendar_date(tmp_store):
    tmp_store.write_partition("trades", pd.Timestamp("2024-01-02"), trades(D1, 3))
    assert tmp_store.list_dates("trades") == [D1]
    assert pdir(tmp_store, "trades", D1).name == "date=2024-01-02"


def test_record_batch_input(tmp_store):
    batch = trades(D1, 9).to_batches()[0]
    info = tmp_store.write_partition("trades", D1, batch)
    assert info.rows == 9
    assert tmp_store.read_partition("trades", D1).equals(trades(D1, 9))


# ------------------------------------------------------------------- idempotence and overwrite


def test_idempotent_rewrite_gives_same_manifest_and_files(tmp_store):
    first = tmp_store.write_partition("trades", D1, trades(D1, 50), max_rows_per_file=20, metadata={"k": 1})
    before = files_in(pdir(tmp_store, "trades", D1))
    assert len(first.files) == 3
    second = tmp_store.write_partition("trades", D1, trades(D1, 50), max_rows_per_file=20, metadata={"k": 1})
    after = files_in(pdir(tmp_store, "trades", D1))
    assert second.files == first.files
    assert second.manifest == first.manifest
    assert after == before  # same names, same bytes, nothing new (no temporary files either)


def test_overwrite_replaces_and_leaves_no_stale_parts(tmp_store):
    tmp_store.write_partition("trades", D1, trades(D1, 60), max_rows_per_file=10)
    old_names = {f["name"] for f in tmp_store.read_manifest("trades", D1)["files"]}
    assert len(old_names) == 6
    info = tmp_store.write_partition("trades", D1, trades(D1, 25, version=1), max_rows_per_file=10)
    assert tmp_store.read_partition("trades", D1).equals(trades(D1, 25, version=1))
    on_disk = set(files_in(pdir(tmp_store, "trades", D1)))
    assert on_disk == {MANIFEST, *info.files}
    assert not old_names & on_disk


class _HalfWritingFS:
    """A filesystem whose output streams write half of what they are given and then fail (disk full)."""

    def __init__(self, fs):
        self._fs = fs

    def __getattr__(self, name):
        return getattr(self._fs, name)

    def open_output_stream(self, path, *args, **kwargs):
        return _HalfStream(self._fs.open_output_stream(path, *args, **kwargs))


class _HalfStream:
    def __init__(self, stream):
        self._stream = stream

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stream.close()
        return False

    def write(self, data):
        self._stream.write(bytes(data)[: len(data) // 2])
        raise OSError("No space left on device (injected)")


def test_failed_rewrite_of_the_same_data_keeps_committed_parts_whole(tmp_store):
    """Re-writing the same data produces the committed part names; a failure must not truncate them."""
    tmp_store.write_partition("trades", D1, trades(D1, 40))
    before = files_in(pdir(tmp_store, "trades", D1))
    tmp_store.fs = _HalfWritingFS(tmp_store.fs)
    with pytest.raises(StoreError, match="injected"):
        tmp_store.write_partition("trades", D1, trades(D1, 40))
    assert files_in(pdir(tmp_store, "trades", D1)) == before
    assert DatasetStore(tmp_store.uri).read_partition("trades", D1).equals(trades(D1, 40))


# ------------------------------------------------------------------------------ schema and empty


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda t: t.drop_columns(["qty"]), r"missing \['qty'\]"),
        (lambda t: t.append_column("extra", pa.array([1] * t.num_rows)), r"unexpected \['extra'\]"),
        (lambda t: t.set_column(3, "qty", pa.array(["lots"] * t.num_rows)), "cannot cast"),
        (
            lambda t: pa.table({**{n: t[n] for n in t.column_names}, "symbol": [None] * t.num_rows}),
            "symbol",
        ),
        (
            lambda t: t.set_column(0, SCHEMA.field("symbol"), pa.array([None] * t.num_rows, pa.string())),
            "non-nullable column 'symbol' has nulls",
        ),
    ],
    ids=["missing-column", "extra-column", "uncastable-type", "null-key-cast", "null-key-same-schema"],
)
def test_schema_enforcement_names_table_and_date(tmp_store, bad, match):
    with pytest.raises(ValueError, match=r"table=trades/date=2024-01-02") as err:
        tmp_store.write_partition("trades", D1, bad(trades(D1, 4)), schema=SCHEMA)
    err.match(match)
    assert tmp_store.list_dates("trades") == []
    assert files_in(pdir(tmp_store, "trades", D1)) == {}


def test_bad_chunk_after_flushed_parts_commits_nothing_and_cleans_up(tmp_store):
    tmp_store.write_partition("trades", D1, trades(D1, 8))
    before = files_in(pdir(tmp_store, "trades", D1))

    def chunks():
        yield trades(D1, 10, version=1)
        yield trades(D1, 10, version=1, start=10)  # two part files are on disk by now
        yield trades(D1, 3).drop_columns(["price"])

    with pytest.raises(ValueError, match=r"table=trades/date=2024-01-02.*missing \['price'\]"):
        tmp_store.write_partition("trades", D1, chunks(), max_rows_per_file=10)
    assert files_in(pdir(tmp_store, "trades", D1)) == before  # the attempt's parts are removed
    assert tmp_store.read_partition("trades", D1).equals(trades(D1, 8))


def test_empty_partitions_are_committed(tmp_store):
    tmp_store.write_partition("trades", D1, trades(D1, 0))
    tmp_store.write_partition("trades", D2, iter(()), schema=SCHEMA)
    tmp_store.write_partition("trades", D3, trades(D3, 5))
    tmp_store.write_partition("orders", D1, iter(()))  # no data and no schema: a day with no orders
    assert tmp_store.list_dates("trades") == [D1, D2, D3]
    assert tmp_store.list_dates("orders") == [D1]
    for day in (D1, D2):
        got = tmp_store.read_partition("trades", day)
        assert got.num_rows == 0 and got.schema.equals(SCHEMA)
        assert tmp_store.read_manifest("trades", day)["rows"] == 0
    assert tmp_store.read("trades").equals(trades(D3, 5))
    assert tmp_store.read("trades", symbols=["600519.SH"], columns=["price"]).num_rows == 2
    assert tmp_store.read_partition("orders", D1, symbols=["600519.SH"]).num_rows == 0


# -------------------------------------------------------------------------------------- streaming


def test_streaming_write_splits_big_batches_into_bounded_parts(tmp_store):
    n_batches, batch_rows, max_rows = 4, 2_500, 1_000
    seen_parts_while_streaming = []

    def batches():
        for b in range(n_batches):
            seen_parts_while_streaming.append(len(list(pdir(tmp_store, "trades", D1).glob("part-*.parquet"))))
            yield from trades(D1, batch_rows, start=b * batch_rows).to_batches()

    info = tmp_store.write_partition("trades", D1, batches(), max_rows_per_file=max_rows)
    total = n_batches * batch_rows
    assert info.rows == total
    rows = [f["rows"] for f in info.manifest["files"]]
    assert rows == [max_rows] * (total // max_rows)  # every part full, none larger than the bound
    assert [f.startswith(f"part-{k:04d}-") for k, f in enumerate(info.files)] == [True] * len(rows)
    assert seen_parts_while_streaming == [0, 2, 5, 7]  # parts are flushed while the input streams
    got = tmp_store.read_partition("trades", D1)
    assert got.equals(trades(D1, total))
    for name, r in zip(info.files, rows, strict=True):
        assert pq.ParquetFile(pdir(tmp_store, "trades", D1) / name).metadata.num_rows == r


def test_max_rows_per_file_must_be_positive(tmp_store):
    with pytest.raises(ValueError, match="max_rows_per_file"):
        tmp_store.write_partition("trades", D1, trades(D1, 3), max_rows_per_file=0)


# ---------------------------------------------------------------------------------- crashed write

_WRITER = textwrap.dedent(
    """
    import sys, time
    import pyarrow as pa
    from l2vol.storage import DatasetStore

    uri, table, date, marker = sys.argv[1:5]

    def batches():
        for i in range(1_000):
            yield pa.record_batch({"symbol": ["600519.SH"] * 500, "price": [float(i)] * 500})
            if i == 2:  # three part files are on disk; block mid-partition until killed
                open(marker, "w").close()
                time.sleep(600)

    DatasetStore(uri).write_partition(table, date, batches(), max_rows_per_file=500)
    print("COMMITTED")
    """
)


def _run_writer_and_kill(store: DatasetStore, table: str, day: dt.date, tmp_path: Path) -> set[str]:
    """Start a writer process, SIGKILL it once it has part files on disk; return the files it left."""
    part_dir = pdir(store, table, day)
    committed = set(files_in(part_dir))
    marker = tmp_path / f"blocked-{table}"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, store.uri, table, day.isoformat(), str(marker)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    new_parts: set[str] = set()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            new_parts = {p.name for p in part_dir.glob("part-*.parquet")} - committed if part_dir.exists() else set()
            if new_parts and marker.exists():
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"writer exited early: {proc.communicate()}"
        assert new_parts, "writer wrote no part file within 30 s"
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert b"COMMITTED" not in out
    return set(files_in(part_dir)) - committed


def test_killed_write_of_a_new_partition_is_invisible_and_gc_removes_it(tmp_store, tmp_path):
    tmp_store.write_partition("trades", D1, trades(D1))
    left = _run_writer_and_kill(tmp_store, "orders", D2, tmp_path)
    assert len(left) >= 1 and MANIFEST not in left

    assert tmp_store.list_dates("orders") == []
    assert tmp_store.list_tables() == ["trades"]
    with pytest.raises(StoreError, match="no committed partition"):
        tmp_store.read_partition("orders", D2)
    with pytest.raises(StoreError, match="no committed partitions in range"):
        tmp_store.read("orders")

    assert tmp_store.gc() == []  # fresh orphans could belong to a write in progress
    removed = tmp_store.gc(older_than_s=0)
    assert sorted(Path(p).name for p in removed) == sorted(left)
    assert files_in(pdir(tmp_store, "orders", D2)) == {}
    assert tmp_store.read("trades").equals(trades(D1))


def test_killed_overwrite_leaves_the_committed_version_readable_and_unchanged(tmp_store, tmp_path):
    tmp_store.write_partition("trades", D1, trades(D1, 40), max_rows_per_file=15)
    committed = files_in(pdir(tmp_store, "trades", D1))
    left = _run_writer_and_kill(tmp_store, "trades", D1, tmp_path)
    assert len(left) >= 1 and MANIFEST not in left

    assert tmp_store.list_dates("trades") == [D1]
    assert tmp_store.read_partition("trades", D1).equals(trades(D1, 40))
    assert {k: v for k, v in files_in(pdir(tmp_store, "trades", D1)).items() if k in committed} == committed

    # Orphans older than the grace period go; the committed version stays.
    old = time.time() - 7200
    for name in left:
        os.utime(pdir(tmp_store, "trades", D1) / name, (old, old))
    removed = tmp_store.gc()
    assert sorted(Path(p).name for p in removed) == sorted(left)
    assert files_in(pdir(tmp_store, "trades", D1)) == committed
    assert tmp_store.read_partition("trades", D1).equals(trades(D1, 40))


def test_gc_removes_stray_temporary_files_but_never_committed_parts(tmp_store):
    tmp_store.write_partition("trades", D1, trades(D1, 20), max_rows_per_file=7)
    part = pdir(tmp_store, "trades", D1)
    committed = files_in(part)
    (part / f"{MANIFEST}.tmp-0123abcd").write_bytes(b"{}")
    (part / "part-0000-0123456789abcdef.parquet.tmp-0123abcd").write_bytes(b"half")
    (part / "notes.txt").write_text("not ours")  # gc deletes only files the store itself creates
    removed = tmp_store.gc(older_than_s=0)
    assert len(removed) == 2
    assert files_in(part) == {**committed, "notes.txt": b"not ours"}


def test_gc_stops_at_a_corrupt_manifest_instead_of_deleting_parts(tmp_store):
    tmp_store.write_partition("trades", D1, trades(D1, 5))
    part = pdir(tmp_store, "trades", D1)
    (part / MANIFEST).write_text("{ not json")
    with pytest.raises(StoreError, match=r"date=2024-01-02/_manifest.json.*corrupt manifest"):
        tmp_store.gc(older_than_s=0)
    assert len(list(part.glob("part-*.parquet"))) == 1


# ------------------------------------------------------------------------- integrity of committed


def test_manifest_hashes_sizes_and_rows_match_the_files(tmp_store):
    info = tmp_store.write_partition("trades", D1, trades(D1, 45), max_rows_per_file=20)
    man = json.loads((pdir(tmp_store, "trades", D1) / MANIFEST).read_bytes())
    assert man == info.manifest
    assert [f["rows"] for f in man["files"]] == [20, 20, 5] and man["rows"] == 45
    for f in man["files"]:
        path = pdir(tmp_store, "trades", D1) / f["name"]
        payload = path.read_bytes()
        assert hashlib.sha256(payload).hexdigest() == f["sha256"]
        assert f["name"].endswith(f"-{f['sha256'][:16]}.parquet")
        assert len(payload) == f["bytes"]
        assert pq.ParquetFile(path).metadata.num_rows == f["rows"]


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage"])
def test_damaged_committed_part_raises_store_error_naming_the_path(tmp_store, damage):
    info = tmp_store.write_partition("trades", D1, trades(D1, 30), max_rows_per_file=10)
    victim = pdir(tmp_store, "trades", D1) / info.files[1]
    if damage == "missing":
        victim.unlink()
    elif damage == "truncated":
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    else:
        victim.write_bytes(os.urandom(victim.stat().st_size))
    with pytest.raises(StoreError) as err:
        tmp_store.read_partition("trades", D1)
    assert str(victim) in str(err.value)
    with pytest.raises(StoreError, match=info.files[1]):
        tmp_store.read("trades", columns=["price"])


def test_corrupt_manifest_raises_store_error_naming_it(tmp_store):
    tmp_store.write_partition("trades", D1, trades(D1, 3))
    (pdir(tmp_store, "trades", D1) / MANIFEST).write_text('{"files": [')
    with pytest.raises(StoreError, match=r"table=trades/date=2024-01-02/_manifest.json: corrupt manifest"):
        tmp_store.read_partition("trades", D1)


# ------------------------------------------------------------------------------ delete, artifacts


def test_delete_partition(tmp_store):
    for day in (D1, D2):
        tmp_store.write_partition("trades", day, trades(day, 5))
    assert tmp_store.delete_partition("trades", D1) is True
    assert tmp_store.list_dates("trades") == [D2]
    assert files_in(pdir(tmp_store, "trades", D1)) == {}
    assert tmp_store.delete_partition("trades", D1) is False
    assert tmp_store.delete_partition("trades", D2) is True
    assert tmp_store.list_tables() == []


def test_json_and_bytes_artifacts(tmp_store):
    report = {"rows_in": 10, "kept": 9, "quarantined": {"crossed_book": 1}, "day": D1}
    loc = tmp_store.write_json("reports/quality/2024-01-02.json", report)
    assert loc.endswith("reports/quality/2024-01-02.json")
    assert tmp_store.read_json("reports/quality/2024-01-02.json") == {**report, "day": "2024-01-02"}
    tmp_store.write_bytes("reports/quality/2024-01-02.html", b"<html></html>")
    assert tmp_store.read_bytes("reports/quality/2024-01-02.html") == b"<html></html>"
    assert tmp_store.exists("reports/quality/2024-01-02.html")
    assert not tmp_store.exists("reports/none.json")
    with pytest.raises(StoreError, match=r"reports/none.json: not found"):
        tmp_store.read_json("reports/none.json")
    assert sorted(p.name for p in Path(tmp_store.root, "reports/quality").iterdir()) == [
        "2024-01-02.html",
        "2024-01-02.json",
    ]
    assert tmp_store.list_tables() == []  # artifacts are not tables
