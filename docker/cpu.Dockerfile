# Worker image for the CPU DAGs (decontam, grade, svg, imagemining, ocr_search, documents, ocr_synth):
#   docker build -f docker/cpu.Dockerfile --build-arg EXTRAS=ocr,svg,grade,imagemining -t IMAGE .
#   quarry run ... -- --runner=DataflowRunner --sdk_container_image=IMAGE --experiments=use_runner_v2
# It has no browser: grading gui ui_to_code rows (the html_render verifier renders in Chromium) needs the
# browser image.
# FROM Beam's own SDK image, so the worker harness (boot, Fn API) matches the Beam that submits the job.
ARG BEAM_VERSION=2.77.0
ARG PYTHON=3.11
FROM apache/beam_python${PYTHON}_sdk:${BEAM_VERSION}
ARG EXTRAS=ocr,svg,grade,imagemining
# Fonts: resvg draws SVG <text> with DejaVu, ocr_synth renders Latin and Chinese text.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fonts-dejavu-core fonts-wqy-microhei \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/quarry
COPY pyproject.toml setup.py README.md ./
COPY scripts/constraints.txt scripts/constraints.txt
COPY schemas schemas
COPY operators operators
COPY pipelines pipelines
COPY dags dags
RUN pip install --no-cache-dir -c scripts/constraints.txt ".[${EXTRAS}]"
