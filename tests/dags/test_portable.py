"""DAGs on the PortableRunner (the Fn API path Flink and Spark use): Beam's Python job server, started through
`quarry.pipelines.job_server` (so the data-loss fix applies in its process), and an EXTERNAL worker pool, both
started by the test; the run's shards, rejects and counts must equal the DirectRunner's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quarry.dags.demo import DEMOS
from quarry.dags.inspect import differences, fingerprint

DAGS_CHECKED = tuple(DEMOS)  # every DAG (~3 min in all on 2 cores)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port} after {timeout} s")


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    """(job endpoint, worker pool endpoint); the worker pool's SDK workers run this interpreter."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    job_port, pool_port = _free_port(), _free_port()
    logs = tmp_path_factory.mktemp("portable")
    procs = [
        subprocess.Popen([sys.executable, "-m", "quarry.pipelines.job_server", f"--port={job_port}"],
                         stdout=open(logs / "job.log", "w"), stderr=subprocess.STDOUT, env=env),
        subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                          f"--service_port={pool_port}"], stdout=open(logs / "pool.log", "w"),
                         stderr=subprocess.STDOUT, env=env),
    ]
    try:
        _wait_for_port(job_port, procs[0])
        _wait_for_port(pool_port, procs[1])
        yield f"localhost:{job_port}", f"localhost:{pool_port}"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _run(name: str, demo, out: Path, beam_args: list[str]) -> dict:
    argv = [sys.executable, "-m", "quarry.dags.cli", "run", name, "--output", str(out),
            "--source", demo.source or f"demo-{name}"]
    for pattern in demo.patterns:
        argv += ["--input", pattern]
    for s in demo.sets:
        argv += ["--set", s]
    done = subprocess.run(argv + ["--", *beam_args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return fingerprint(str(out))


@pytest.mark.parametrize("name", DAGS_CHECKED)
def test_portable_runner_gives_the_direct_runners_shards(portable, name, tmp_path):
    job, pool = portable
    demo = DEMOS[name](tmp_path / "inputs")
    direct = _run(name, demo, tmp_path / "direct", [])
    ported = _run(name, demo, tmp_path / "portable", [
        "--runner=PortableRunner", f"--job_endpoint={job}", "--environment_type=EXTERNAL",
        f"--environment_config={pool}"])
    assert any(k.startswith("data/") for k in direct), sorted(direct)[:5]
    assert differences(direct, ported) == []
