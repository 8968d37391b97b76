"""``open_database`` on PostgreSQL when several gateway processes start at once on an empty
database: every one of them gets its tables, none fails on another's ``CREATE TABLE``."""

from __future__ import annotations

import secrets
import threading

import pytest
import sqlalchemy as sa
from tests.store.test_journal import PG_URL, PG_URL_ENV

from astra.store import METADATA, open_database


def test_concurrent_starts_on_an_empty_postgresql_database_all_succeed() -> None:
    if not PG_URL:
        pytest.skip(f"set {PG_URL_ENV} to a PostgreSQL database to run this test")
    schema = f"astra_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    starts = 8
    barrier = threading.Barrier(starts)
    errors: list[BaseException] = []
    engines: list[sa.Engine] = []

    def start() -> None:
        barrier.wait(30)
        try:
            engines.append(open_database(url))
        except BaseException as exc:  # what the test reports
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(starts)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert len(engines) == starts
        with admin.connect() as conn:
            tables = set(conn.execute(sa.text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema}).scalars())
        assert tables == set(METADATA.tables)
    finally:
        for engine in engines:
            engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
