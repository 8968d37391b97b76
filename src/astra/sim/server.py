"""Running a simulated venue on a socket: ``SimServer``, an async context manager used by
tests and by ``SimCluster`` (``cluster.py``, where ``serve_sim``, the ``astra sim`` command's
main loop, lives)."""

from __future__ import annotations

from aiohttp import web

from .app import SimExchange

__all__ = ["SimServer"]


class SimServer:
    """Serve a ``SimExchange`` on ``host:port`` (port 0 picks a free one) until closed."""

    def __init__(
        self, exchange: SimExchange | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.exchange = exchange or SimExchange()
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def urls(self) -> dict[str, str]:
        http, ws = self.base_url, f"ws://{self.host}:{self.port}"
        return {
            "spot REST": f"{http}/api",
            "perp REST": f"{http}/fapi",
            "spot WebSocket": f"{ws}/sstream",
            "perp WebSocket": f"{ws}/fstream",
        }

    async def start(self) -> SimServer:
        self._runner = web.AppRunner(
            self.exchange.app(), shutdown_timeout=2.0, handle_signals=False
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
