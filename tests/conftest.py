"""Test-wide setup: no network, no writes under the real $HOME."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

# Libraries cache under $HOME (~/.apache_beam, ~/.cache/huggingface, torch hub);
# keep the suite's writes in a throwaway home and never wait on a hub.
_HOME = tempfile.mkdtemp(prefix="quarry-test-home-")
os.environ["HOME"] = _HOME
os.environ.setdefault("XDG_CACHE_HOME", os.path.join(_HOME, ".cache"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TORCH_HOME", os.path.join(_HOME, ".cache", "torch"))


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """One `quarry demo` run per test session, shared by the DAG, CLI and notebook tests.

    Under pytest-xdist every worker has its own session; the lock and the
    shared base folder make the first worker run the demo and the others wait
    for it (the demo runs all eight DAGs, about a minute on 2 cores).
    """
    from filelock import FileLock

    from quarry.dags.cli import main

    # Under xdist the base is .../pytest-N/popen-gwK: its parent is this run's, shared by its workers. Without
    # xdist the parent is pytest-of-USER, shared by every run on the machine: a demo there would be stale.
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out, done = root / "demo", root / "demo.done"
    with FileLock(str(root / "demo.lock")):
        if not done.exists():
            assert main(["demo", "--output", str(out), "--overwrite"]) == 0
            done.touch()
    return out


class FakeChatServer:
    """A chat-completions server; ``behave(server, body, n_seen) -> (status, payload, headers)``.

    ``payload`` is a dict (sent as JSON) or bytes (sent raw). Records every
    request (path, headers, body) and the most requests in flight at once.
    """

    def __init__(self, behave: Callable):
        self.behave = behave
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = threading.Event()  # ends sleeping handlers at teardown
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                with server.lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "raw": raw})
                    n_seen = len(server.requests)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, payload, headers = server.behave(server, json.loads(raw), n_seen)
                finally:
                    with server.lock:
                        server.in_flight -= 1
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class Server(ThreadingHTTPServer):
            # socketserver listens with a backlog of 5: 32 clients connecting at once on a loaded machine can
            # lose a connect, and the client's retry then reaches the handler once instead of twice.
            request_queue_size = 256

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def bodies(self) -> list[dict]:
        return [json.loads(r["raw"]) for r in self.requests]


@pytest.fixture
def chat_server():
    """Start fake OpenAI-compatible endpoints on 127.0.0.1: `chat_server(behave) -> FakeChatServer`."""
    servers = []

    def start(behave: Callable) -> FakeChatServer:
        server = FakeChatServer(behave)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()



class _FakeRemoteFileSystem:  # built on first use (Beam finds filesystems by subclass: define it once)
    cls = None


def _fake_remote_class():
    from apache_beam.io.filesystem import MatchResult
    from apache_beam.io.localfilesystem import LocalFileSystem

    prefix = "fakefs://"

    class FakeRemoteFileSystem(LocalFileSystem):
        """`fakefs://bucket/key` paths stored under `root`, reached only through Beam's FileSystems."""

        root = None

        @classmethod
        def scheme(cls):
            return "fakefs"

        @classmethod
        def local(cls, path: str) -> str:  # LocalFileSystem's own methods call these with local paths too
            return os.path.join(cls.root, path[len(prefix):]) if path.startswith(prefix) else path

        def join(self, basepath, *paths):
            return "/".join([basepath.rstrip("/"), *paths])

        def create(self, path, *args, **kw):
            os.makedirs(os.path.dirname(self.local(path)), exist_ok=True)
            return super().create(self.local(path), *args, **kw)

        def open(self, path, *args, **kw):
            return super().open(self.local(path), *args, **kw)

        def exists(self, path):
            return super().exists(self.local(path))

        def delete(self, paths):
            return super().delete([self.local(p) for p in paths])

        def rename(self, sources, destinations):
            return super().rename([self.local(p) for p in sources], [self.local(p) for p in destinations])

        def match(self, patterns, limits=None):
            out = []
            for r in super().match([self.local(p) for p in patterns], limits):
                for m in r.metadata_list:
                    m.path = prefix + os.path.relpath(m.path, self.root)
                out.append(MatchResult(prefix + os.path.relpath(r.pattern, self.root), r.metadata_list))
            return out

    return FakeRemoteFileSystem


@pytest.fixture
def fake_remote_fs(tmp_path_factory, monkeypatch):
    """A remote filesystem for tests: `fakefs://bucket/key` paths, stored in a local folder (yielded), reached
    only through Beam's FileSystems as gs:// is on Dataflow. Per-machine caches go to a fresh temp dir."""
    import tempfile

    if _FakeRemoteFileSystem.cls is None:
        _FakeRemoteFileSystem.cls = _fake_remote_class()
    root = tmp_path_factory.mktemp("fakefs")
    monkeypatch.setattr(_FakeRemoteFileSystem.cls, "root", str(root))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("machine-tmp")))
    yield root
