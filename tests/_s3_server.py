"""A real S3-compatible server on localhost for the fsspec store's tests, and a proxy that can take it away.

``s3_endpoint`` (session-scoped) is the server's URL: ``REVSEQ_TEST_S3_ENDPOINT`` if set (``.ci/s3-server``
starts moto's server in its own process and exports it), otherwise moto's server started here on a free
port, in a thread of this process. Either way the store talks to it over HTTP; nothing is mocked.

``Proxy`` forwards TCP connections to the server; ``stop()`` closes its port and cuts every open connection,
which is what a client sees when a server goes away, while the server itself stays up, so a test can look
into the bucket afterwards through a direct connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

CREDENTIALS = {"key": "testing", "secret": "testing"}
# Fail fast when the server is gone: one attempt per botocore call, a short connect timeout.
FAST_FAIL = {"config_kwargs": {"connect_timeout": 1, "read_timeout": 5, "retries": {"total_max_attempts": 1}}}


def options(endpoint: str, **extra: Any) -> dict[str, Any]:
    """The storage options for an s3:// URL on ``endpoint``."""
    return {**CREDENTIALS, "endpoint_url": endpoint, **extra}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("s3fs", reason="the remote extra: pip install 'revseq[remote]'")
    given = os.environ.get("REVSEQ_TEST_S3_ENDPOINT")
    if given:
        yield given
        return
    server_module = pytest.importorskip("moto.server", reason="moto's server: pip install 'moto[server]'")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3(s3_endpoint: str) -> Any:
    """A direct s3fs connection to the server: the oracle for what is in a bucket."""
    import s3fs

    return s3fs.S3FileSystem(**options(s3_endpoint), skip_instance_cache=True)


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    """A new, empty bucket; removed after the test, with whatever a failing test left in it."""
    name = f"revseq-test-{secrets.token_hex(6)}"
    s3.mkdir(name)
    try:
        yield name
    finally:
        with contextlib.suppress(FileNotFoundError):
            s3.rm(name, recursive=True)
        with contextlib.suppress(FileNotFoundError, OSError):
            s3.rmdir(name)


def objects(s3: Any, bucket: str) -> list[str]:
    """Every key in the bucket, as the server lists it now."""
    s3.invalidate_cache()
    return sorted(s3.find(bucket))


class Proxy:
    """Forwards every TCP connection on a local port to ``target`` (``http://host:port``) until stopped."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        """Listen (again) on the same port as before, or a free one the first time."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the port and cut every connection: the server has gone away, as far as a client can tell."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by stop()
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._open.update((client, upstream))
            ended = [0]  # directions of this connection that have ended: the second closes both sockets
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, ended), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, ended: list[int]) -> None:
        try:
            while chunk := source.recv(1 << 16):
                sink.sendall(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        with self._lock:
            ended[0] += 1
            if ended[0] == 2:
                for sock in (source, sink):
                    self._open.discard(sock)
                    sock.close()
