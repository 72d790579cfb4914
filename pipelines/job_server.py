"""Beam's Python job server (the portable runner's job service) with quarry's Beam fixes applied.

    python -m quarry.pipelines.job_server --port 8099
    quarry run DAG ... -- --runner=PortableRunner --job_endpoint=localhost:8099 \\
        --environment_type=EXTERNAL --environment_config=localhost:50000   # a worker pool you started

`quarry.pipelines.beam_fixes` patches only the process that imports quarry; a job server started as
`python -m apache_beam.runners.portability.local_job_service_main` runs the pipeline's data plane in its own
process and keeps the flush race that loses rows. This entry point imports the fixes first.
"""

from __future__ import annotations

import quarry.pipelines.beam_fixes  # noqa: F401 - the fixes, before the job service starts


def main(argv: list[str]) -> None:
    import signal
    import sys

    from apache_beam.runners.portability import local_job_service_main

    signal.signal(signal.SIGTERM, lambda *args: sys.exit(0))
    local_job_service_main.run(argv or ["--port=0"])  # Beam's main: --port, --port_file, --staging_dir, ...


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
