"""CLIP scoring throughput: a bare batched loop vs Beam RunInference (ScoreClip).

    .venv/bin/python benchmarks/bench_clip.py [--model quarry-tiny] [--pretrained none]
        [--n 2000] [--batch 32] [--device auto] [--precision auto] [--repeat 1] [--threads 0]

Both paths get the same N synthetic JPEGs (256-640 px, gradients, noise and
shapes, built in memory) with captions, do the same work per image (decode at
reduced scale, preprocess, tokenize, one forward pass per batch of B) and use
batches of exactly B (RunInference: min = max = B).

Model load is excluded from both: the bare loop times from after `load()`
(which ends with a warm-up forward pass); the Beam path times from the start
of its first `run_inference` call to the end of its last, read from Beam
metrics the instrumented handler records, so worker start-up and model load
(in the DoFn's setup) fall outside while every per-element Beam cost between
batches (coders, BatchElements, keying) falls inside. The Beam pipeline's
end-to-end wall time is printed as well.

With --repeat R both paths run R times, alternating, and the best time of
each counts (on a shared machine, the run least disturbed by other work).

On the GPU: --model ViT-B-32 --pretrained none --device cuda.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

import numpy as np
from PIL import Image, ImageDraw

WORDS = ("a photo of red blue green dog cat car street chart map receipt mountain beach city night "
         "two three small large old new wooden glass person people table window screen sign").split()


def make_inputs(n: int, seed: int = 0) -> list[tuple[bytes, str]]:
    """N (jpeg bytes, caption) pairs with varied sizes and content."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(256, 641, size=2))
        # A random colour gradient, plus noise drawn at quarter scale and upsampled.
        x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        c0, cx, cy = (rng.uniform(0, 255, size=(1, 1, 3)).astype(np.float32) for _ in range(3))
        rgb = c0 * (1 - x) * (1 - y) + cx * x + cy * y * (1 - x)
        noise = rng.standard_normal((h // 4 + 1, w // 4 + 1, 3), dtype=np.float32) * rng.uniform(2, 40)
        rgb += np.repeat(np.repeat(noise, 4, axis=0), 4, axis=1)[:h, :w]
        im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(1, 5))):
            x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            box = [x0, y0, x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2))]
            fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
            (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=fill)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(rng.integers(70, 95)))
        caption = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 16))))
        out.append((buf.getvalue(), caption))
    return out


def bench_bare(cfg, items, batch: int) -> tuple[float, list[float], dict]:
    from quarry.operators.clip import ClipScorer

    t0 = time.perf_counter()
    scorer = ClipScorer(cfg).load()  # ends with a warm-up forward pass
    load_s = time.perf_counter() - t0
    start = time.perf_counter()
    scores: list[float] = []
    for i in range(0, len(items), batch):
        scores.extend(scorer.score_bytes_batch(items[i:i + batch]))
    return time.perf_counter() - start, scores, {"load_s": load_s, **scorer.describe()}


def bench_beam(cfg, items, batch: int) -> tuple[float, float, dict]:
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from quarry.pipelines.clip import METRICS_NAMESPACE, ClipModelHandler, ScoreClip

    class TimedHandler(ClipModelHandler):
        """Records when each batch starts and ends (epoch µs) as Beam distributions."""

        def run_inference(self, batch_, model, inference_args=None):
            start = time.time_ns() // 1000
            scores = super().run_inference(batch_, model, inference_args)
            end = time.time_ns() // 1000
            beam.metrics.Metrics.distribution(METRICS_NAMESPACE, "bench_batch_start_us").update(start)
            beam.metrics.Metrics.distribution(METRICS_NAMESPACE, "bench_batch_end_us").update(end)
            return scores

    # beam.Create would pickle and bz2-compress every image into the pipeline
    # graph (~1 s per 1,000 images here, all before the first batch). The
    # in-process DirectRunner shares this process's memory, so workers look
    # the inputs up by index instead, as a file source would hand them over.
    global _INPUTS
    _INPUTS = items
    options = PipelineOptions(["--runner=DirectRunner"])
    t0 = time.perf_counter()
    p = beam.Pipeline(options=options)
    counted = (
        p
        | "Indices" >> beam.Create(range(len(items)), reshuffle=False)
        | "Inputs" >> beam.Map(_keyed_input)
        | "Score" >> ScoreClip(cfg, model_handler=TimedHandler(cfg))
        | "Count" >> beam.combiners.Count.Globally()
    )
    counted | "Check" >> beam.Map(lambda n, want=len(items): _check(n, want))
    result = p.run()
    result.wait_until_finish()
    wall = time.perf_counter() - t0

    def dist(name):
        res = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name))
        return res["distributions"][0].committed

    first_start = dist("bench_batch_start_us").min
    last_end = dist("bench_batch_end_us").max
    batches = dist("bench_batch_start_us").count
    return (last_end - first_start) / 1e6, wall, {"batches": batches}


_INPUTS: list[tuple[bytes, str]] = []


def _keyed_input(i: int) -> tuple[int, tuple[bytes, str]]:
    # Through sys.modules: cloudpickle copies a __main__ function's globals by
    # value, which would ship every image with the function.
    return i, sys.modules[__name__]._INPUTS[i]


def _reset_gpu_peak() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _gpu_peak() -> int:
    """Peak bytes torch allocated on the GPU since the last reset (0 without CUDA)."""
    torch = sys.modules.get("torch")
    return torch.cuda.max_memory_allocated() if torch is not None and torch.cuda.is_available() else 0


def _check(n: int, want: int) -> None:
    if n != want:
        raise AssertionError(f"ScoreClip emitted {n} scores for {want} inputs")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="quarry-tiny")
    ap.add_argument("--pretrained", default="none")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--repeat", type=int, default=1, help="run both paths this many times; report the best")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads for both paths (clip.threads; 0: the cores of the process). On a busy "
                         "machine 1 avoids threads spinning while waiting for a descheduled sibling")
    args = ap.parse_args(argv)
    from quarry.schemas.caption import ClipConfig

    cfg = ClipConfig(model=args.model, pretrained=args.pretrained, device=args.device, precision=args.precision,
                     min_batch_size=args.batch, max_batch_size=args.batch, threads=args.threads)
    t0 = time.perf_counter()
    items = make_inputs(args.n)
    mb = sum(len(b) for b, _ in items) / 1e6
    print(f"inputs: {args.n} JPEGs, 256-640 px, {mb:.1f} MB, built in {time.perf_counter() - t0:.1f} s; "
          f"batch {args.batch}; cpu cores {os.cpu_count()}; torch threads {args.threads or 'default'}")

    bare_runs, beam_runs, info = [], [], {}
    gpu_peak = {"bare": 0, "beam": 0}
    for _ in range(max(1, args.repeat)):
        _reset_gpu_peak()
        bare_s, _, run_info = bench_bare(cfg, items, args.batch)
        gpu_peak["bare"] = max(gpu_peak["bare"], _gpu_peak())
        info = info or run_info  # the first load is the cold one
        bare_runs.append(bare_s)
        _reset_gpu_peak()
        beam_s, wall, binfo = bench_beam(cfg, items, args.batch)
        gpu_peak["beam"] = max(gpu_peak["beam"], _gpu_peak())
        beam_runs.append((beam_s, wall))
    bare_s = min(bare_runs)
    beam_s, wall = min(beam_runs)
    runs = f"best of {len(bare_runs)}, " if len(bare_runs) > 1 else ""
    print(f"model: {info['model']}/{info['pretrained']} on {info['device']} {info['precision']} "
          f"(load + warm-up {info['load_s']:.1f} s, excluded)")
    print(f"(a) bare loop   decode+score_bytes_batch: {args.n / bare_s:9.1f} images/s  ({runs}{bare_s:.2f} s)")
    print(f"(b) RunInference ScoreClip, DirectRunner: {args.n / beam_s:9.1f} images/s  ({runs}{beam_s:.2f} s from "
          f"first batch start to last batch end, {binfo['batches']} batches; end-to-end incl. start-up and model "
          f"load {wall:.2f} s = {args.n / wall:.1f} images/s)")
    if gpu_peak["bare"] or gpu_peak["beam"]:
        print(f"GPU memory, peak allocated by torch: bare {gpu_peak['bare'] / 2**20:,.0f} MiB, "
              f"RunInference {gpu_peak['beam'] / 2**20:,.0f} MiB (in-process runner: the same process)")
    ratio = bare_s / beam_s
    print(f"ratio RunInference/bare: {ratio:.2f}  (target >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
