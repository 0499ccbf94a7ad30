"""UI tests: the gateway served by uvicorn on the session's real redis-server, driven by Debian's chromium.

Never ``playwright install``: the browser is /usr/bin/chromium. One server per module (its users
are hashed once); tests use their own ids so they do not depend on each other.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from chimera.ops.settings import Settings
from chimera.streams.redis import connect
from tests.support.gateway import PASSWORD, gateway_app, served

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def ui_server(redis_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui")
    r = connect(redis_server.url)
    r.flushall()
    settings = Settings(redis_url=redis_server.url, store_url=f"sqlite:///{tmp}/store.sqlite",
                        objects_url=f"file://{tmp}/objects")
    app, store = gateway_app(settings, r)
    with served(app) as base:
        yield SimpleNamespace(base=base, r=r, store=store, app=app)
    r.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def open_as(browser, ui_server):
    """open_as("risk") -> a signed-in page (its own browser context: its own cookies)."""
    contexts = []

    def make(user: str, path: str = "/ui"):
        ctx = browser.new_context(viewport={"width": 1400, "height": 900})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(10_000)
        page.goto(f"{ui_server.base}/ui/login")
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{ui_server.base}/ui")
        if path != "/ui":
            page.goto(f"{ui_server.base}{path}")
        return page

    yield make
    for ctx in contexts:
        ctx.close()
