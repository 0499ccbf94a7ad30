"""Start the local venue in a background thread on a free loopback port (for tests and demos)."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from dataclasses import dataclass, field

from aiohttp import web

from chimera.ops.loopback import free_port  # re-exported: tests and the drill import it from here

from .server.app import VenueConfig, VenueServer, default_keys


@dataclass
class RunningVenue:
    server: VenueServer
    base_url: str
    ws_url: str
    spot_ws_url: str
    keys: dict[str, tuple[str, str]]
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _runner: web.AppRunner = field(repr=False)

    def call(self, fn, *args):
        """Run `fn(*args)` on the venue's loop (engine access must stay on that thread)."""
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def control(self, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def advance(self, to_ms: int | None = None, events: int | None = None) -> dict:
        body = {}
        if to_ms is not None:
            body["advance_to_ms"] = to_ms
        if events is not None:
            body["advance_events"] = events
        return self.control("/chimera/v1/replay", body)

    def stop(self) -> None:
        async def shutdown():
            await self._runner.cleanup()
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def start_venue(cfg: VenueConfig | None = None) -> RunningVenue:
    cfg = cfg or VenueConfig()
    port = cfg.port or free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def boot():
            srv = VenueServer(cfg)
            runner = web.AppRunner(srv.build_app(), handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, cfg.host, port).start()
            holder.update(server=srv, runner=runner)

        try:
            loop.run_until_complete(boot())
        except BaseException as exc:  # surface boot errors to the caller
            holder["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="chimera-venue", daemon=True)
    thread.start()
    ready.wait(120)
    if "error" in holder:
        raise holder["error"]
    srv: VenueServer = holder["server"]
    keys = {name: (acc.api_key, acc.api_secret) for name, acc in srv.engine.accounts.items()}
    base = f"http://{cfg.host}:{port}"
    return RunningVenue(server=srv, base_url=base, ws_url=f"ws://{cfg.host}:{port}/futures",
                        spot_ws_url=f"ws://{cfg.host}:{port}/spot", keys=keys, _loop=loop, _thread=thread,
                        _runner=holder["runner"])


__all__ = ["RunningVenue", "VenueConfig", "default_keys", "free_port", "start_venue"]
