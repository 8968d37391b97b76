"""Files in a record that are not the record's (a damaged part, a non-Parquet file named like
one, Parquet of another schema, a folder) and times written with digits other than ASCII:
each is a named error (``RecordUnreadable``, ``InvalidParameter``), never a bare pyarrow or
ValueError; compaction leaves an hour holding such a file as it is and goes on."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.tape.test_files import DAY, T0, M, _book, _times

from astra.core import InvalidParameter, RecordUnreadable
from astra.tape import BOOK, compact, iter_batches, parse_time, partition_dir, write_rows

HOUR = 3_600_000_000


def _two_hours(root) -> None:
    """Parts of two hours: 10 rows at T0 + k s, then 10 at T0 + 1 h + k s."""
    for seq, base in enumerate((T0, T0 + HOUR)):
        for half in range(2):
            write_rows(root, M, BOOK, _book([base + (half * 5 + k) * 1_000_000
                                             for k in range(5)]), seq * 2 + half)


def _intruder(root, first: int, how: str) -> str:
    path = partition_dir(root, M, BOOK, DAY) / f"p-{first:016d}-{first + 1:016d}-9.parquet"
    if how == "garbage":
        path.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    elif how == "truncated":
        good = partition_dir(root, M, BOOK, DAY).glob("p-*.parquet").__next__().read_bytes()
        path.write_bytes(good[: len(good) // 2])
    elif how == "schema":
        pq.write_table(pa.table({"local_ts": ["a"], "type": ["update"]}), path)
    elif how == "folder":
        path.mkdir()
    return path.name


@pytest.mark.parametrize("how", ["garbage", "truncated", "schema", "folder"])
def test_a_file_not_of_the_record_is_named_not_a_pyarrow_error(tmp_path, how):
    _two_hours(tmp_path)
    name = _intruder(tmp_path, T0 + 7_000_000, how)
    with pytest.raises(RecordUnreadable) as info:
        _times(tmp_path)
    assert name in info.value.message and info.value.status == 500
    # The rows before it are read as ever; a range that does not meet it never opens it.
    assert _times(tmp_path, end=T0 + 6_000_000) == [T0 + k * 1_000_000 for k in range(7)]
    assert len(_times(tmp_path, start=T0 + HOUR)) == 10
    with pytest.raises(RecordUnreadable):
        list(iter_batches(tmp_path, M, BOOK, T0, T0 + HOUR, columns=["type", "frame"]))


def test_compaction_leaves_an_hour_with_such_a_file_and_merges_the_others(tmp_path):
    _two_hours(tmp_path)
    _intruder(tmp_path, T0 + 7_000_000, "garbage")
    merged = compact(tmp_path, M, BOOK, T0 + 2 * HOUR)
    folder = partition_dir(tmp_path, M, BOOK, DAY)
    names = sorted(p.name for p in folder.iterdir())
    assert merged == 2  # the second hour's two parts; the first hour untouched
    assert [n for n in names if n.startswith("c-")] == [
        f"c-{T0 + HOUR:016d}-{T0 + HOUR + 9_000_000:016d}.parquet"]
    assert len([n for n in names if n.startswith("p-")]) == 3  # two parts and the intruder
    assert len(_times(tmp_path, start=T0 + HOUR)) == 10


@pytest.mark.parametrize("text", ["²", "1796580000000²", "１７９６５８００００００",
                                  "١٧٩٦٥٨٠٠٠٠٠٠٠", "１７９６５８００００００.5", "."])
def test_times_take_ascii_digits_only(text):
    with pytest.raises(InvalidParameter) as info:
        parse_time(text, "from")
    assert info.value.parameter == "from"
    assert parse_time("1796580000000.5", "from") == 1_796_580_000_000_500
