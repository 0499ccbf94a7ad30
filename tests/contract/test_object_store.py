"""One contract for every ObjectStore backend: local directory, and MinIO (moto's S3 server)."""

from __future__ import annotations

import pytest

from chimera.store import open_objects
from tests.support.redis_servers import free_port


@pytest.fixture(scope="module")
def moto_server():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield port
    server.stop()


@pytest.fixture(params=["local", "minio"])
def objects(request, tmp_path):
    if request.param == "local":
        return open_objects(f"file://{tmp_path}/objs")
    port = request.getfixturevalue("moto_server")
    return open_objects(f"minio://testing:testing@127.0.0.1:{port}/chimera-{tmp_path.name.lower().replace('_', '-')[:40]}")


def test_put_get_exists_list_delete(objects):
    objects.put("autopsy/t1.html", b"<h1>t1</h1>", "text/html")
    objects.put("autopsy/t2.html", b"<h1>t2</h1>", "text/html")
    objects.put("models/m.bin", bytes(range(256)))
    assert objects.get("autopsy/t1.html") == b"<h1>t1</h1>"
    assert objects.get("models/m.bin") == bytes(range(256))
    assert objects.exists("models/m.bin") and not objects.exists("models/nope")
    assert objects.list("autopsy/") == ["autopsy/t1.html", "autopsy/t2.html"]
    objects.delete("autopsy/t1.html")
    assert objects.list("autopsy/") == ["autopsy/t2.html"]
    with pytest.raises(KeyError):
        objects.get("autopsy/t1.html")


def test_overwrite(objects):
    objects.put("k", b"one")
    objects.put("k", b"two")
    assert objects.get("k") == b"two"


def test_local_refuses_escaping_keys(tmp_path):
    with pytest.raises(ValueError, match="escapes"):
        open_objects(f"file://{tmp_path}/o").put("../evil", b"x")
