"""``astra sim --replay`` over a record holding a file that is not the record's (damaged, or
not Parquet): met while replaying, that market's replay stops with a line naming the file
and the venue's clock goes on (its other markets still move); met while building the book at
``from``, the simulator refuses to start (``astra sim: ...``, no traceback)."""

from __future__ import annotations

from datetime import date

import pytest

from astra.cli import main
from astra.tape import BOOK, partition_dir

from .test_replay import (
    MARKET,
    SEC,
    SNAPSHOT,
    T0,
    expected,
    frame,
    levels,
    replay_of,
    replaying,
    standard_record,
    steps,
    write_book,
)


def _garbage(root, first: int) -> str:
    folder = partition_dir(root, MARKET, BOOK, date(2026, 12, 6))  # T0's day
    path = folder / f"p-{first:016d}-{first + 1:016d}-9.parquet"
    path.write_bytes(b"not parquet")
    return path.name


def test_a_damaged_file_mid_record_stops_that_market_not_the_venue(tmp_path, capsys):
    standard_record(tmp_path)  # snapshot at T0, updates at T0 + 1 s and T0 + 2 s
    # More record after the damaged file, so the replay has to read through it.
    write_book(tmp_path, MARKET, [(T0 + 3 * SEC, "update", None,
                                   frame("update", MARKET, 4, {"bids": [], "asks": []}))], 1)
    name = _garbage(tmp_path, T0 + SEC + 500_000)
    ex = replaying(tmp_path)
    assert levels(ex) == expected(**SNAPSHOT)
    eth = ex.state("spot", "ETHUSDT")
    before = eth.engine.update_id
    steps(ex, 80)  # 4 s: the three rows of the first part, then the damaged file
    replay = replay_of(ex)
    assert replay.ended and replay.rows_applied == 3  # the row at 3 s is never reached
    out = capsys.readouterr().out
    assert f"replay of {MARKET} on SIM stopped at" in out and name in out
    held = levels(ex)
    steps(ex, 40)  # the venue's clock goes on: the book stays, other markets move
    assert levels(ex) == held
    assert eth.engine.update_id > before + 50


def test_a_damaged_file_before_from_refuses_to_start(tmp_path, capsys):
    standard_record(tmp_path)
    name = _garbage(tmp_path, T0 + 500_000)
    with pytest.raises(ValueError, match=name):
        replaying(tmp_path, start_us=T0 + 1_500_000)
    # The command says so in one line, without a traceback.
    with pytest.raises(SystemExit) as exit_:
        main(["sim", "--port", "0", "--replay", str(tmp_path),
              "--replay-from", str((T0 + 1_500_000) // 1000)])
    err = capsys.readouterr().err
    assert exit_.value.code != 0 and "Traceback" not in err
    assert err.startswith(f"astra sim: --replay {tmp_path}: the record file ") and name in err
