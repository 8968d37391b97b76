"""Hostile input for the history queries and ``astra history export``: a record holding a
frame that is not a book message (a damaged or hand-made file) is a ``RECORD_UNREADABLE``,
never a bare decode error; times in digits other than ASCII and an ``--out`` that is a file
exit 2 naming the option, with nothing written."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from astra.cli import main
from astra.core import RecordUnreadable
from astra.history.query import HistoryReader
from astra.tape import BOOK, BOOK_SCHEMA, TRADE, TRADE_SCHEMA, write_rows

M = "SIM-SPOT-BTC-USDT"
T0 = 1_796_580_000_000_000  # 2026-12-06T18:00:00Z, µs


def _frame(kind: str, uid: int, bids: list[tuple[float, float]]) -> bytes:
    return json.dumps({"type": kind, "market": M, "updateId": uid, "asks": [],
                       "bids": [{"price": p, "quantity": q} for p, q in bids],
                       "timestamp": T0 // 1000}).encode()


@pytest.fixture
def damaged(tmp_path):
    """A book record: a snapshot at T0, an update at T0 + 1 ms, then at T0 + 2 ms a frame that
    is not JSON and at T0 + 3 ms one that is not a book message."""
    rows = [(T0, "snapshot", "start", _frame("snapshot", 1, [(1.0, 1.0)])),
            (T0 + 1000, "update", None, _frame("update", 2, [(2.0, 1.0)])),
            (T0 + 2000, "update", None, b"{not json"),
            (T0 + 3000, "update", None, b'{"type": "update", "bids": "x"}')]
    write_rows(tmp_path, M, BOOK, pa.table({
        "local_ts": [r[0] for r in rows], "type": [r[1] for r in rows],
        "reason": [r[2] for r in rows], "update_id": list(range(1, 5)),
        "timestamp": [T0 // 1000] * 4, "frame": [r[3] for r in rows]}, schema=BOOK_SCHEMA), 0)
    return tmp_path


def test_a_frame_that_is_not_a_book_message_is_unreadable_not_a_decode_error(damaged):
    reader = HistoryReader(damaged)
    book = json.loads(reader.book_at(M, T0 + 1500))
    assert [lv["price"] for lv in book["bids"]] == [2.0, 1.0]  # before it: as recorded
    for at in (T0 + 2500, T0 + 3500):
        with pytest.raises(RecordUnreadable) as info:
            reader.book_at(M, at)
        assert "not a book message" in info.value.message


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(["history", "export", *argv])
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_export_of_a_damaged_record_exits_2_with_the_reason(damaged, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(["--market", M, "--from", str(T0 // 1000), "--to",
                                 str(T0 // 1000 + 10), "--format", "csv", "--type", "book",
                                 "--dir", str(damaged), "--out", str(out)], capsys)
    assert (code, stdout) == (2, "") and "Traceback" not in err
    assert err.startswith("astra history export: a recorded order book frame is not a book")
    assert not list(out.iterdir())  # the partial file removed


@pytest.mark.parametrize(("option", "value", "names"), [
    ("--from", "²", ("--from", "not a time")),
    ("--to", "١٧٩٦٥٨٠٠٠٠٠١٠", ("--to", "not a time")),
    ("--out", "{file}", ("--out",)),
    ("--out", "{file}/sub", ("--out", "Not a directory")),
])
def test_export_bad_options_exit_2_naming_them(damaged, tmp_path, capsys, option, value,
                                               names):
    afile = tmp_path / "a-file"
    afile.write_text("kept")
    args = {"--market": M, "--from": str(T0 // 1000), "--to": str(T0 // 1000 + 1),
            "--out": str(tmp_path / "out")}
    args[option] = value.format(file=afile)
    code, stdout, err = run_cli([*(x for kv in args.items() for x in kv), "--format", "csv",
                                 "--dir", str(damaged)], capsys)
    assert (code, stdout) == (2, "") and "Traceback" not in err
    assert err.startswith("astra history export: ") and all(n in err for n in names), err
    assert afile.read_text() == "kept"


def test_export_from_equal_to_is_the_book_at_that_moment(damaged, tmp_path, capsys):
    out = tmp_path / "out"
    at = str(T0 // 1000 + 1)  # the update at T0 + 1 ms is within that millisecond
    code, _, err = run_cli(["--market", M, "--from", at, "--to", at, "--format", "csv",
                           "--type", "book", "--dir", str(damaged), "--out", str(out)],
                           capsys)
    assert code == 0, err
    (path,) = out.iterdir()
    lines = path.read_text().splitlines()
    assert lines[0] == ("exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,"
                        "amount")
    assert [line.split(",")[4:] for line in lines[1:]] == [["true", "bid", "2", "1"],
                                                           ["true", "bid", "1", "1"]]


def test_a_trade_with_a_side_not_buy_or_sell_is_unreadable(tmp_path):
    write_rows(tmp_path, M, TRADE, pa.table({
        "local_ts": [T0, T0 + 1000], "type": ["trade", "trade"], "reason": [None, None],
        "time": [T0 // 1000, T0 // 1000 + 1], "price": [1.0, 2.0], "quantity": [1.0, 1.0],
        "side": ["BUY", "SIDEWAYS"], "trade_id": ["1", "2"]}, schema=TRADE_SCHEMA), 0)
    reader = HistoryReader(tmp_path)
    page = reader.trades(M, T0, T0, 10)
    assert [(t.price, t.side.value) for t in page.trades] == [(1.0, "BUY")]
    with pytest.raises(RecordUnreadable, match="SIDEWAYS"):
        reader.trades(M, T0, T0 + 1000, 10)
