"""Real servers for the storage tests, on 127.0.0.1 with random ports: an S3 API (moto's server
mode, used through s3fs exactly as against AWS) and a plain HTTP file server (``http.server``).

Clients find the S3 endpoint and credentials the standard way, through the environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), which is also what the
README tells users to set; subprocesses get the same variables.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class S3Server:
    endpoint: str
    env: dict[str, str]

    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, key="testing", secret="testing",
                                 skip_instance_cache=True)

    def bucket(self, name: str) -> str:
        """Create (or reuse) a bucket; returns ``s3://name``."""
        fs = self.fs()
        if not fs.exists(name):
            fs.mkdir(name)
        return f"s3://{name}"

    def upload(self, local: Path, url: str) -> str:
        fs = self.fs()
        target = url.split("://", 1)[1]
        if local.is_dir():
            for f in sorted(local.rglob("*")):
                if f.is_file():
                    fs.put_file(str(f), f"{target.rstrip('/')}/{f.relative_to(local).as_posix()}")
        else:
            fs.put_file(str(local), target)
        return url

    def download(self, url: str, local: Path) -> Path:
        """Copy every object under ``url`` into ``local`` (keys become relative paths)."""
        fs = self.fs()
        base = url.split("://", 1)[1].rstrip("/")
        for key in fs.find(base):
            dest = local / key[len(base) + 1:]
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(key, str(dest))
        return local


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 (random port) for the whole session; AWS_* set in os.environ."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield S3Server(endpoint=env["AWS_ENDPOINT_URL"], env=env)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """Serve ``folder`` with Python's http.server on 127.0.0.1 (random port); yields the base URL."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)
