"""Each remote-storage download closes its storage client: no connection outlives the load
(before, GCS's HTTP session kept its connection to the storage open after each download and
model swap, until the garbage collector happened to find it)."""

from __future__ import annotations

import gc
import shutil
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from server.errors import ModelNotFound
from server.models.remote_storage import download_model
from tests.models.conftest import STORAGES_AT
from tests.models.test_remote_storage_lying import GzipEncodedStorage


class Storage(GzipEncodedStorage):
    """The same object in S3's, GCS's and Azure's protocols, stored as it is; counts the
    connections open to it."""

    stored = b"an archive"
    open_connections = 0
    changed = threading.Condition()

    def _object_headers(self) -> dict[str, str]:
        headers = super()._object_headers()
        del headers["Content-Encoding"], headers["x-goog-stored-content-encoding"]
        return headers

    def setup(self) -> None:
        with self.changed:
            type(self).open_connections += 1
        super().setup()

    def do_HEAD(self) -> None:  # noqa: N802
        if self.path.endswith("/missing.tar.gz"):  # no such object: a 404, connection kept
            self._send(404, b"", {"x-ms-error-code": "BlobNotFound"})
            return
        super().do_HEAD()

    def do_GET(self) -> None:  # noqa: N802
        if "missing.tar.gz" in self.path:
            self._send(404, b'{"error": {"code": 404, "message": "No such object"}}', {})
            return
        super().do_GET()

    def finish(self) -> None:  # the client closed the connection (or the server ends)
        super().finish()
        with self.changed:
            type(self).open_connections -= 1
            self.changed.notify_all()


@pytest.fixture
def storage_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, type[Storage]]]:
    handler = type("Handler", (Storage,), {"changed": threading.Condition()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}).start()
    monkeypatch.setenv("BUCKET_NAME", "models")
    gc.disable()  # a connection left open must not be closed by a collection meanwhile
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        gc.enable()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("model", ["prod", "missing"])
@pytest.mark.parametrize(("storage", "setup"), STORAGES_AT.items())
async def test_a_download_leaves_no_connection_open(
    storage_server: tuple[str, type[Storage]],
    monkeypatch: pytest.MonkeyPatch,
    storage: str,
    setup: Any,
    model: str,
) -> None:
    # A failed one ("missing": a 404) too. There, the SDK's error holds the response, its
    # connection pool and the connection, in a cycle of references: closing the client only
    # lets go of the pool (urllib3 2), so before, the connection of each of the three stayed
    # open until a garbage collection.
    url, handler = storage_server
    setup(url, monkeypatch)

    failure = None
    try:
        path = await download_model(storage, model)
    except ModelNotFound as exc:
        failure = exc  # kept while the connections are counted, as a caller may keep it
    else:
        shutil.rmtree(path.parent, ignore_errors=True)

    with handler.changed:  # the storage sees the connection end once the client closes it
        closed = handler.changed.wait_for(lambda: handler.open_connections == 0, timeout=5)
    assert closed, f"{handler.open_connections} connection(s) still open ({failure})"
    assert (failure is None) == (model == "prod")
