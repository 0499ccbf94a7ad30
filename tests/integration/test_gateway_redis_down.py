"""The gateway when Redis is gone: 503 REDIS_UNAVAILABLE with Retry-After in its own error shape (not
Litestar's bare 500), documented on every route, and service again once Redis is back."""

from __future__ import annotations

from litestar.testing import TestClient

from chimera.ops.settings import Settings
from chimera.streams.redis import connect
from tests.support.gateway import PASSWORD, bearer, gateway_app
from tests.support.polling import wait_until
from tests.support.redis_servers import RedisServer


def test_redis_down_is_503_with_retry_after_and_the_gateway_recovers(tmp_path):
    server = RedisServer()
    try:
        r = connect(server.url)
        settings = Settings(redis_url=server.url, store_url=f"sqlite:///{tmp_path}/store.sqlite",
                            objects_url=f"file://{tmp_path}/objects")
        app, _store = gateway_app(settings, r)
        with TestClient(app) as c:
            auth = bearer(c, "admin")
            responses = c.get("/schema/openapi.json").json()["paths"]["/v1/orders"]["post"]["responses"]
            assert "503" in responses and "REDIS_UNAVAILABLE" in responses["503"]["description"]

            server.kill()
            login = c.post("/v1/auth/login", json={"username": "admin", "password": PASSWORD})
            assert login.status_code == 503, login.text
            assert login.json()["error"] == "REDIS_UNAVAILABLE" and login.headers["retry-after"] == "5"
            signed_in = c.get("/v1/orders/no-such-intent", headers=auth)  # the token check reads Redis
            assert signed_in.status_code == 503 and signed_in.json()["error"] == "REDIS_UNAVAILABLE"

            server = RedisServer(port=server.port, workdir=str(server.dir))
            wait_until(lambda: c.post("/v1/auth/login", json={"username": "admin", "password": PASSWORD})
                       .status_code == 200, timeout=30, message="login served again")
            assert c.get("/v1/orders/no-such-intent", headers=auth).status_code == 404
    finally:
        server.stop()
