"""``[smart]`` in ``astra serve``'s config: a bad value stops it before anything starts."""

from __future__ import annotations

import asyncio

import pytest


@pytest.mark.parametrize(("toml", "named"), [
    ("[smart]\nstale_after = 0", "stale_after"),
    ('[smart]\nvenues = "SIM"', "venues"),
    ('[smart]\nequivalent = [["USDT"]]', "equivalent"),
    ("[smart]\nbogus = 1", "bogus"),
])
async def test_astra_serve_refuses_a_bad_smart_section_naming_the_key(tmp_path, capsys, toml,
                                                                       named):
    from astra.cli import _parser
    from astra.server.serve import serve

    path = tmp_path / "astra.toml"
    path.write_text(toml + "\n")
    args = _parser().parse_args(["serve", "--config", str(path), "--data-dir", str(tmp_path)])
    async with asyncio.timeout(60):
        assert await serve(args) == 2
    err = capsys.readouterr().err
    assert "[smart]" in err and named in err and str(path) in err
    assert not (tmp_path / "astra.db").exists()
