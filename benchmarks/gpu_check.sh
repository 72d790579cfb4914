#!/usr/bin/env bash
# GPU throughput of the CLIP and OCR operators against their bare loops (issue 25). Each part fits one
# device run (10 minutes at most; a run carries at most 64 MiB, so each part carries its own wheels):
#
#   here, where pip works:  bash benchmarks/gpu_check.sh fetch clip   # -> .whl/site-clip.tar.xz (git-ignored)
#   on the GPU machine:     bash benchmarks/gpu_check.sh run clip     # carry .whl; ~5 min on one H200
#   then the same with `ocr` (fetch replaces .whl/).
#
# `run` unpacks the carried packages into /tmp/site, puts the repo on the path as `quarry`, checks the part's
# imports first (one line naming every missing module, before any model loads), prints nvidia-smi's GPU,
# memory and driver, then:
#   clip: benchmarks/bench_clip.py, ViT-B-32 (random weights: throughput only) through RunInference vs the bare
#         batched loop, for each precision in PRECISIONS and batch in BATCHES: images/s of both, their ratio,
#         and the peak GPU memory torch allocated;
#   ocr:  benchmarks/bench_ocr.py, the ocr_search DAG vs its bare loop. rapidocr runs on onnxruntime, and the
#         image's onnxruntime is the CPU build (the CUDA one is ~250 MB, over what a run may carry): this is
#         the OCR figure on that machine's CPU cores, and is labelled so.
# Wheels: benchmarks/gpu_wheels.txt ([common] + the part's section). Knobs (environment): DEVICE (cuda),
# N (4096 images per CLIP run), BATCHES ("64 256 1024"), PRECISIONS ("fp16 bf16"), OCR_N (48 posters),
# PYTHON (fetch: .venv/bin/python; run: python3). CI never runs this: nothing in quarry needs a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
verb=${1:-}
part=${2:-}
case "$part" in clip|ocr) ;; *) echo "usage: bash benchmarks/gpu_check.sh fetch|run clip|ocr" >&2; exit 2 ;; esac

wheels_of() {  # the requirement lines of [common] and [$1]
    awk -v want="$1" '/^\[/ {sec = substr($0, 2, length($0) - 2); next}
                      /^#/ || NF == 0 {next}
                      sec == "common" || sec == want {print}' benchmarks/gpu_wheels.txt
}

case "$verb" in
fetch)
    py=${PYTHON:-.venv/bin/python}
    rm -rf .whl && mkdir -p .whl
    grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
             manylinux2014_x86_64 manylinux1_x86_64; do
        platforms+=(--platform "$p")
    done
    # Installed here for CPython 3.12 (the wheels hold compiled code for that machine, not this one), pruned of
    # tests and examples (Beam ships its own), packed as one xz tar: ~50 MB instead of ~65 MB of wheels.
    site=$(mktemp -d)
    # shellcheck disable=SC2046
    "$py" -m pip install -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" --target "$site" $(wheels_of "$part") 2>&1 | grep -v "^WARNING: Location" || true
    find "$site" \( -name "*_test.py" -o -name tests -o -name examples -o -name __pycache__ \) -prune \
        -exec rm -rf {} +
    tar -C "$site" -cf - . | xz -T0 -6 > ".whl/site-$part.tar.xz"
    rm -rf "$site"
    echo ".whl/site-$part.tar.xz: $(du -h ".whl/site-$part.tar.xz" | cut -f1) (a device run carries at most 64 MiB)"
    ;;
run)
    py=${PYTHON:-python3}
    if [ -f ".whl/site-$part.tar.xz" ]; then
        mkdir -p /tmp/site && tar -C /tmp/site -xJf ".whl/site-$part.tar.xz"
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    if ! "$py" -c "import quarry" 2>/dev/null; then  # the repo root is the package (setup.py: package_dir)
        mkdir -p /tmp/quarry-path && ln -sfn "$PWD" /tmp/quarry-path/quarry
        export PYTHONPATH=/tmp/quarry-path${PYTHONPATH:+:$PYTHONPATH}
    fi
    export QUARRY_PROGRESS=0 PYTHONUNBUFFERED=1
    "$py" - "$part" <<'PY'
import importlib, sys
mods = {"clip": ("torch", "quarry.operators.compat", "quarry.pipelines.clip"),
        "ocr": ("rapidocr", "onnxruntime", "quarry.dags.ocr_search")}[sys.argv[1]]
missing = []
for m in ("apache_beam", "pydantic", *mods):
    try:
        importlib.import_module(m)
    except Exception as e:  # noqa: BLE001 - name them all, then stop
        missing.append(f"{m} ({type(e).__name__}: {e})")
if missing:
    sys.exit("gpu_check: cannot import " + "; ".join(missing) + f" -- run `bash benchmarks/gpu_check.sh fetch "
             f"{sys.argv[1]}` where pip works and carry .whl")
if sys.argv[1] == "clip":
    import torch

    from quarry.operators.compat import ensure_torchvision

    ensure_torchvision()  # what quarry's CLIP loader does first
    import open_clip  # noqa: F401
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
else:
    import onnxruntime
    print(f"onnxruntime {onnxruntime.__version__}, providers {onnxruntime.get_available_providers()}")
PY
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: none"
    if [ "$part" = clip ]; then
        for precision in ${PRECISIONS:-fp16 bf16}; do
            for batch in ${BATCHES:-64 256 1024}; do
                echo "== CLIP ViT-B-32 ${precision}, batch ${batch}, ${N:-4096} images"
                "$py" benchmarks/bench_clip.py --model ViT-B-32 --pretrained none --device "${DEVICE:-cuda}" \
                    --precision "$precision" --batch "$batch" --n "${N:-4096}"
            done
        done
    else
        echo "== OCR: rapidocr on onnxruntime's CPU build (this machine's $(nproc) CPU cores), ${OCR_N:-48} posters"
        "$py" benchmarks/bench_ocr.py --n "${OCR_N:-48}" --batch 8
    fi
    ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh fetch|run clip|ocr" >&2
    exit 2
    ;;
esac
