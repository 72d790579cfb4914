# Worker image for the gui DAG: Debian's Chromium headless shell (the renderer's default browser) and fonts.
#   docker build -f docker/browser.Dockerfile -t IMAGE .
#   quarry run gui ... -- --runner=DataflowRunner --sdk_container_image=IMAGE --experiments=use_runner_v2
ARG BEAM_VERSION=2.77.0
ARG PYTHON=3.11
FROM apache/beam_python${PYTHON}_sdk:${BEAM_VERSION}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium-headless-shell fonts-dejavu-core fonts-wqy-microhei fonts-liberation \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/quarry
COPY pyproject.toml setup.py README.md ./
COPY scripts/constraints.txt scripts/constraints.txt
COPY schemas schemas
COPY operators operators
COPY pipelines pipelines
COPY dags dags
RUN pip install --no-cache-dir -c scripts/constraints.txt ".[gui]"
