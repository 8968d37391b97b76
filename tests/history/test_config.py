"""``[history]``: defaults, every setting checked, a clear error naming the bad one."""

from __future__ import annotations

from pathlib import Path

import pytest

from astra.history.config import HistoryConfig


def test_absent_section_records_nothing_into_the_data_dir(tmp_path):
    config = HistoryConfig.from_config(None, tmp_path)
    assert config.markets == ()
    assert config.dir == tmp_path / "history"
    assert (config.flush_seconds, config.snapshot_every, config.snapshot_seconds) == (2.0, 1000,
                                                                                        60.0)
    assert (config.retention_days, config.compact_seconds, config.max_pending) == (7, 600.0,
                                                                                    1_000_000)
    assert HistoryConfig.from_config({}, tmp_path) == config


def test_every_setting_is_read(tmp_path):
    config = HistoryConfig.from_config({
        "markets": ["sim-spot-*", "SMART-SPOT-BTC-USDT", "SIM-SPOT-*"], "dir": "~/tape",
        "flush_seconds": 0.5, "snapshot_every": 10, "snapshot_seconds": 5,
        "retention_days": 30, "compact_seconds": 60, "max_pending": 1000,
    }, tmp_path)
    # Upper-cased (symbols are), duplicates once, in the order written.
    assert config.markets == ("SIM-SPOT-*", "SMART-SPOT-BTC-USDT")
    assert config.dir == Path.home() / "tape"
    assert config.flush_seconds == 0.5 and isinstance(config.snapshot_seconds, float)
    assert (config.snapshot_every, config.retention_days, config.max_pending) == (10, 30, 1000)
    assert config.compact_seconds == 60.0


def test_the_simulator_default_records_btc_and_its_smart_book_for_two_days(tmp_path):
    config = HistoryConfig.default_for_simulator(tmp_path)
    assert config.markets == ("SIM-SPOT-BTC-USDT", "SMART-SPOT-BTC-USDT")
    assert config.retention_days == 2 and config.dir == tmp_path / "history"
    assert config.flush_seconds == 2.0


@pytest.mark.parametrize(("section", "named"), [
    ({"markets": "SIM-SPOT-*"}, "[history] markets"),
    ({"markets": [1]}, "[history] markets"),
    ({"markets": ["BTC"]}, "[history] markets"),  # no exchange part
    ({"markets": ["../etc/passwd"]}, "[history] markets"),
    ({"markets": ["SIM-SPOT-BTC/USDT"]}, "[history] markets"),
    ({"markets": ["SIM-" + "A" * 120]}, "[history] markets"),
    ({"dir": ""}, "[history] dir"),
    ({"dir": 5}, "[history] dir"),
    ({"flush_seconds": 0}, "[history] flush_seconds"),
    ({"flush_seconds": "2"}, "[history] flush_seconds"),
    ({"flush_seconds": True}, "[history] flush_seconds"),
    ({"flush_seconds": float("nan")}, "[history] flush_seconds"),
    ({"snapshot_every": 0}, "[history] snapshot_every"),
    ({"snapshot_every": 2.5}, "[history] snapshot_every"),
    ({"snapshot_seconds": -1}, "[history] snapshot_seconds"),
    ({"retention_days": 0}, "[history] retention_days"),
    ({"retention_days": 1.5}, "[history] retention_days"),
    ({"compact_seconds": 10**9}, "[history] compact_seconds"),
    ({"max_pending": 0}, "[history] max_pending"),
    ({"max_pending": "many"}, "[history] max_pending"),
    ({"marketz": ["SIM-SPOT-*"]}, "'marketz'"),
])
def test_a_bad_setting_is_a_value_error_naming_it(tmp_path, section, named):
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
        HistoryConfig.from_config(section, tmp_path)


def test_a_section_that_is_not_a_table_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\[history\]"):
        HistoryConfig.from_config(["SIM-SPOT-*"], tmp_path)  # type: ignore[arg-type]


def test_the_config_is_frozen(tmp_path):
    config = HistoryConfig.from_config(None, tmp_path)
    with pytest.raises(AttributeError):
        config.markets = ("X-*",)  # type: ignore[misc]
