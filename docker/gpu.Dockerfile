# Worker image for CLIP on GPU (caption, interleaved): CUDA torch plus quarry[caption].
#   docker build -f docker/gpu.Dockerfile -t IMAGE .
#   quarry run caption ... --set clip.accelerator='type:nvidia-l4;count:1;install-nvidia-driver' -- \
#       --runner=DataflowRunner --sdk_container_image=IMAGE --experiments=use_runner_v2
# Dataflow installs the NVIDIA driver on the host (install-nvidia-driver in the hint); the image brings CUDA
# torch: the default Linux x86-64 torch wheels are CUDA builds carrying their CUDA runtime, so no CUDA base
# image is needed (scripts/setup.sh installs a CPU build on our machines instead).
ARG BEAM_VERSION=2.77.0
ARG PYTHON=3.11
FROM apache/beam_python${PYTHON}_sdk:${BEAM_VERSION}
ARG TORCH=torch==2.13.0
ARG EXTRAS=caption
WORKDIR /opt/quarry
RUN pip install --no-cache-dir "${TORCH}" torchvision
COPY pyproject.toml setup.py README.md ./
COPY scripts/constraints.txt scripts/constraints.txt
COPY schemas schemas
COPY operators operators
COPY pipelines pipelines
COPY dags dags
RUN pip install --no-cache-dir -c scripts/constraints.txt ".[${EXTRAS}]"
# CLIP weights: bake a checkpoint in (pass --set clip.pretrained=/models/...) rather than download per worker.
# COPY models/ /models/
