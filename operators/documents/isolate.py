"""Run `pdf.extract` in a child process: bounded wall time (`timeout_s`) and address space (`max_memory_mb`).

Why a child and not caps alone: page and size caps bound what quarry asks
PDFium to do, but not what PDFium's parser does on a hostile file before the
first page (object nesting, xref loops, a huge decompression). A child
process with RLIMIT_AS and a kill on timeout bounds all of it; a crash or an
out-of-memory kill is a `resource_limit` reject, a hang a `timeout` reject.
The cost is one process start per document (~0.1 s, measured by
benchmarks/bench_documents.py).

Protocol: argv[1] is the memory limit in MiB; the parent writes pickle((bytes, Params)) to the child's stdin; the
child writes pickle(DocumentData | Rejection) to stdout.
"""

from __future__ import annotations

import pickle
import resource
import subprocess
import sys

from quarry.operators.base import Rejection
from quarry.operators.documents.pdf import RESOURCE_LIMIT, TIMEOUT, DocumentData, Params


def _limit(max_memory_mb: int) -> None:
    """In the child, before PDFium loads (no preexec_fn: forking a threaded Beam worker with one is unsafe)."""
    if max_memory_mb > 0:
        cap = max_memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def extract_isolated(data: bytes, params: Params, timeout_s: float = 60.0,
                     max_memory_mb: int = 2048) -> DocumentData | Rejection:
    """`pdf.extract(data, params)` in a child process, or `timeout` / `resource_limit`."""
    try:
        done = subprocess.run([sys.executable, "-m", "quarry.operators.documents.isolate", str(max_memory_mb)],
                              input=pickle.dumps((data, params)), capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return Rejection(TIMEOUT, f"PDFium ran past {timeout_s:g} s (documents.timeout_s): killed")
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        return Rejection(RESOURCE_LIMIT, f"PDFium's process exited {done.returncode} (documents.max_memory_mb "
                                         f"{max_memory_mb}): {tail[0][:200]}")
    return pickle.loads(done.stdout)


def _main() -> None:
    _limit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    from quarry.operators.documents.pdf import extract

    data, params = pickle.loads(sys.stdin.buffer.read())
    result = extract(data, params)
    sys.stdout.buffer.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    _main()
