"""The tape on disk: atomic parts split by date, compaction (also one interrupted midway),
retention, ranged reads, the one-writer lock, and the times users write."""

from __future__ import annotations

import shutil
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astra.core import InvalidMarket, InvalidParameter
from astra.tape import (
    BOOK,
    BOOK_SCHEMA,
    TRADE,
    TRADE_SCHEMA,
    TapeLock,
    apply_retention,
    check_market,
    compact,
    day_start_us,
    format_time,
    iter_batches,
    parse_time,
    partition_files,
    read_table,
    recorded,
    write_rows,
)

M = "SIM-SPOT-BTC-USDT"
DAY = date(2026, 12, 6)
T0 = day_start_us(DAY)  # 2026-12-06T00:00:00Z
US_PER_DAY = 86_400_000_000


def _book(times: list[int]) -> pa.Table:
    return pa.table({
        "local_ts": times,
        "type": ["update"] * len(times),
        "reason": [None] * len(times),
        "update_id": list(range(len(times))),
        "timestamp": [t // 1000 for t in times],
        "frame": [f'{{"t":{t}}}'.encode() for t in times],
    }, schema=BOOK_SCHEMA)


def _trades(times: list[int]) -> pa.Table:
    n = len(times)
    return pa.table({
        "local_ts": times, "type": ["trade"] * n, "reason": [None] * n,
        "time": [t // 1000 for t in times], "price": [100.0 + i for i in range(n)],
        "quantity": [0.5] * n, "side": ["BUY"] * n, "trade_id": [str(i) for i in range(n)],
    }, schema=TRADE_SCHEMA)


def _times(root, market=M, kind=BOOK, start=None, end=None) -> list[int]:
    return read_table(root, market, kind, start, end).column("local_ts").to_pylist()


def test_a_write_is_one_part_per_utc_date_named_by_its_times(tmp_path):
    times = [T0 - 2, T0 - 1, T0, T0 + 5, T0 + US_PER_DAY + 1]
    paths = write_rows(tmp_path, M, BOOK, _book(times), seq=3)
    assert [p.parent.name for p in paths] == ["date=2026-12-05", "date=2026-12-06",
                                             "date=2026-12-07"]
    assert paths[1].name == f"p-{T0:016d}-{T0 + 5:016d}-3.parquet"
    assert paths[0].parent.parent.name == f"symbol={M}"
    assert paths[0].parents[3].name == "exchange=SIM" and paths[0].parents[2].name == "type=book"
    assert pq.read_table(paths[1]).column("local_ts").to_pylist() == [T0, T0 + 5]
    assert _times(tmp_path) == times
    assert not list(tmp_path.rglob(".tmp-*"))  # written under a temporary name, then renamed
    assert write_rows(tmp_path, M, BOOK, _book([]), seq=4) == []


def test_ranged_reads_are_inclusive_and_pick_files_and_row_groups(tmp_path):
    for i in range(5):  # five parts of ten rows, 1 ms apart
        write_rows(tmp_path, M, BOOK, _book([T0 + (i * 10 + j) * 1000 for j in range(10)]), i)
    assert len(partition_files(tmp_path, M, BOOK)) == 5
    assert len(partition_files(tmp_path, M, BOOK, T0 + 12_000, T0 + 25_000)) == 2
    got = _times(tmp_path, start=T0 + 12_000, end=T0 + 25_000)
    assert got == [T0 + k * 1000 for k in range(12, 26)]
    assert _times(tmp_path, start=T0 + 49_000) == [T0 + 49_000]
    assert _times(tmp_path, end=T0 - 1) == []
    empty = read_table(tmp_path, M, BOOK, T0 + 10**9, None)
    assert empty.num_rows == 0 and empty.schema == BOOK_SCHEMA
    cols = read_table(tmp_path, M, BOOK, columns=["update_id"])
    assert cols.column_names == ["local_ts", "update_id"] and cols.num_rows == 50
    batches = list(iter_batches(tmp_path, M, BOOK, T0, T0 + 49_000, batch_size=4))
    assert max(b.num_rows for b in batches) <= 4 and sum(b.num_rows for b in batches) == 50
    assert _times(tmp_path, "SIM-SPOT-ETH-USDT") == []  # nothing recorded: nothing, no error


def test_compaction_merges_the_parts_before_a_time_and_keeps_the_rows(tmp_path):
    for i in range(4):
        write_rows(tmp_path, M, TRADE, _trades([T0 + i * 10 + j for j in range(3)]), i)
    before = read_table(tmp_path, M, TRADE)
    assert compact(tmp_path, M, TRADE, T0 + 25) == 3  # the fourth part ends after 25
    files = partition_files(tmp_path, M, TRADE)
    assert [(f.compacted, f.first, f.last) for f in files] == [
        (True, T0, T0 + 22), (False, T0 + 30, T0 + 32)]
    assert read_table(tmp_path, M, TRADE).equals(before)
    # Later parts join the compacted file on the next run; a lone file is left alone.
    write_rows(tmp_path, M, TRADE, _trades([T0 + 40]), 9)
    assert compact(tmp_path, M, TRADE, T0 + 100) == 2
    assert [(f.compacted, f.first, f.last) for f in partition_files(tmp_path, M, TRADE)] == [
        (True, T0, T0 + 40)]
    assert compact(tmp_path, M, TRADE, T0 + 100) == 0
    assert read_table(tmp_path, M, TRADE).num_rows == before.num_rows + 1
    assert len(list(tmp_path.rglob("*.parquet"))) == 1


def test_an_interrupted_compaction_is_read_once_and_cleaned_up(tmp_path):
    """A crash after the compacted file is renamed in, before the files it merged are
    deleted: those (parts, and the older compacted file) are skipped, then deleted."""
    for i in range(3):
        write_rows(tmp_path, M, BOOK, _book([T0 + i * 10 + j for j in range(2)]), i)
    compact(tmp_path, M, BOOK, T0 + 15)  # c-(0..11), p-(20..21)
    folder = partition_files(tmp_path, M, BOOK)[0].path.parent
    saved = tmp_path / "saved"
    shutil.copytree(folder, saved)
    write_rows(tmp_path, M, BOOK, _book([T0 + 30]), 7)
    shutil.copytree(folder, tmp_path / "saved-with-part", dirs_exist_ok=True)
    compact(tmp_path, M, BOOK, T0 + 100)  # c-(0..30) replaces c-(0..11) and two parts
    for leftover in saved.iterdir():  # ... but suppose the deletes never happened
        shutil.copy(leftover, folder / leftover.name)
    shutil.copy(next((tmp_path / "saved-with-part").glob("p-*-7.parquet")), folder)
    assert len(list(folder.iterdir())) == 4
    expected = [T0, T0 + 1, T0 + 10, T0 + 11, T0 + 20, T0 + 21, T0 + 30]
    assert _times(tmp_path) == expected  # every row once
    assert [(f.first, f.last) for f in partition_files(tmp_path, M, BOOK)] == [(T0, T0 + 30)]
    compact(tmp_path, M, BOOK, T0 + 100)
    assert [p.name for p in folder.iterdir()] == [f"c-{T0:016d}-{T0 + 30:016d}.parquet"]
    assert _times(tmp_path) == expected


def test_retention_deletes_whole_days_older_than_kept(tmp_path):
    for d in range(5):
        write_rows(tmp_path, M, BOOK, _book([T0 - d * US_PER_DAY]), d)
        write_rows(tmp_path, "SIM2-SPOT-BTC-USDT", TRADE, _trades([T0 - d * US_PER_DAY]), d)
    (tmp_path / "exchange=SIM/type=book/symbol=X-Y/date=garbage").mkdir(parents=True)
    assert apply_retention(tmp_path, 2, DAY) == 4  # 12-03 and 12-02, of both markets
    assert _times(tmp_path) == [T0 - 2 * US_PER_DAY, T0 - US_PER_DAY, T0]
    assert (tmp_path / "exchange=SIM/type=book/symbol=X-Y/date=garbage").is_dir()
    assert apply_retention(tmp_path, 2, DAY) == 0
    assert set(recorded(tmp_path)) == {(M, BOOK), ("SIM2-SPOT-BTC-USDT", TRADE)}


def test_one_writer_per_root_and_a_crashed_writers_temporary_files_removed(tmp_path):
    write_rows(tmp_path, M, BOOK, _book([T0]), 1)
    folder = partition_files(tmp_path, M, BOOK)[0].path.parent
    (folder / ".tmp-deadbeef.parquet").write_bytes(b"PAR1 half written")
    assert _times(tmp_path) == [T0]  # never read
    lock = TapeLock(tmp_path)
    try:
        assert not (folder / ".tmp-deadbeef.parquet").exists()
        with pytest.raises(RuntimeError, match="another recorder"):
            TapeLock(tmp_path)
    finally:
        lock.release()
    TapeLock(tmp_path).release()  # free again
    lock.release()  # twice: harmless


def test_market_symbols_are_the_only_path_parts(tmp_path):
    assert check_market(M) == M
    for bad in ("../x", "SIM/SPOT", ".hidden-x", "NODASH", "", "A-" + "B" * 200):
        with pytest.raises(InvalidMarket):
            check_market(bad)
    with pytest.raises(InvalidMarket):
        write_rows(tmp_path, "../../etc-x", BOOK, _book([T0]), 1)
    with pytest.raises(InvalidParameter):
        read_table(tmp_path, M, "orders")


@pytest.mark.parametrize(("text", "us"), [
    ("2026-12-06T00:00:00Z", T0),
    ("2026-12-06", T0),
    ("2026-12-06T01:00:00+01:00", T0),
    ("2026-12-06T00:00:00.250Z", T0 + 250_000),
    (str(T0 // 1000), T0),
    (f" {T0 // 1000 + 7} ", T0 + 7000),
])
def test_times_as_iso_8601_or_unix_milliseconds(text, us):
    assert parse_time(text, "start") == us


@pytest.mark.parametrize("text", ["", "yesterday", "1700000000", "99999999999999999",
                                  "2026-13-01", "1e3", "-5", "x" * 50, "1999-12-31"])
def test_bad_times_name_the_parameter(text):
    with pytest.raises(InvalidParameter) as info:
        parse_time(text, "end")
    assert info.value.parameter == "end"


def test_format_time_is_iso_with_milliseconds():
    assert format_time(T0 + 123_456) == "2026-12-06T00:00:00.123Z"
    assert parse_time(format_time(T0 + 123_000), "t") == T0 + 123_000


def test_compaction_keeps_one_file_per_utc_hour_and_never_rewrites_older_hours(tmp_path):
    hour = 3_600_000_000
    base = T0 - T0 % hour  # an hour's start
    for i, at in enumerate([base + 10, base + hour // 2, base + hour + 5, base + 2 * hour + 7]):
        write_rows(tmp_path, M, BOOK, _book([at, at + 1]), i)
    before = read_table(tmp_path, M, BOOK)
    assert compact(tmp_path, M, BOOK, base + 3 * hour) == 2
    files = partition_files(tmp_path, M, BOOK)
    assert [(f.compacted, f.first, f.last) for f in files] == [
        (True, base + 10, base + hour // 2 + 1),  # the first hour's two parts
        (False, base + hour + 5, base + hour + 6),  # alone in its hour: left as it is
        (False, base + 2 * hour + 7, base + 2 * hour + 8)]
    first_hour = files[0].path.stat().st_mtime_ns
    write_rows(tmp_path, M, BOOK, _book([base + 2 * hour + 100]), 9)
    assert compact(tmp_path, M, BOOK, base + 4 * hour) == 2  # only the third hour merges
    files = partition_files(tmp_path, M, BOOK)
    assert [(f.compacted, f.first) for f in files] == [
        (True, base + 10), (False, base + hour + 5), (True, base + 2 * hour + 7)]
    assert files[0].path.stat().st_mtime_ns == first_hour  # an older hour is not rewritten
    after = read_table(tmp_path, M, BOOK)
    assert after.num_rows == before.num_rows + 1
    assert after.column("local_ts").to_pylist() == sorted(after.column("local_ts").to_pylist())


def test_a_read_that_meets_a_compaction_under_way_gives_every_row_once(tmp_path):
    """Files listed, then compacted (and deleted) before the reader opens them: the reader
    lists again from where it was and gives no row twice or not at all."""
    for i in range(6):  # three rows per part, the last two sharing a time
        write_rows(tmp_path, M, BOOK, _book([T0 + i * 10, T0 + i * 10 + 1, T0 + i * 10 + 1]), i)
    expected = read_table(tmp_path, M, BOOK).column("update_id").to_pylist()
    reader = iter_batches(tmp_path, M, BOOK, batch_size=2)
    got = next(reader).column("update_id").to_pylist()  # the first part's first two rows
    assert compact(tmp_path, M, BOOK, T0 + 1000) == 6  # every part is gone now
    for batch in reader:
        got += batch.column("update_id").to_pylist()
    assert got == expected
