"""Recaption stage throughput against a local endpoint at a fixed latency, next to a bare asyncio loop.

    .venv/bin/python benchmarks/bench_recaption.py [--n 2000] [--latency 0.5] [--concurrency 64]

A fake OpenAI-compatible server (asyncio, HTTP/1.1 keep-alive, its own process so it does not share this one's
GIL) answers every chat completion after `--latency` seconds with a caption that passes the checks. Then:

1. bare: an asyncio loop with one `httpx.AsyncClient` and `--concurrency` requests in flight sends the same
   requests (the same image part and prompt) and reads the replies: the most this client can do;
2. stage: the Recaption transform (pipelines/recaption.py) in a Beam pipeline on the in-process DirectRunner,
   `recaption.max_concurrency=--concurrency`, over `--n` balanced pairs: requests, checks, merge choice and
   Beam's own per-element cost; its wall time includes starting and ending the pipeline, which is also
   measured alone (an identity pipeline over the same pairs) and reported.

Prints requests/s of each, the ideal concurrency / latency, and the ratio stage / bare (target: near 1).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing as mp
import re
import socket
import time

TAIL = ", photographed in clear daylight with soft shadows, sharp detail and natural colours throughout the frame."


def _reply(body: bytes) -> bytes:
    prompt = json.loads(body)["messages"][0]["content"][-1]["text"]
    caption = re.search(r"<original>(.*?)</original>", prompt, re.S).group(1)
    text = caption.rstrip(".") + TAIL
    return json.dumps({"object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}).encode()


def serve(port_queue, latency: float) -> None:
    """A keep-alive HTTP/1.1 server that answers POSTs after `latency` seconds."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
                body = await reader.readexactly(length)
                await asyncio.sleep(latency)
                data = _reply(body)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(data), data))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = await asyncio.start_server(handle, sock=sock, backlog=4096)
        port_queue.put(sock.getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _jpeg(side: int, seed: int) -> bytes:
    """A photo-like JPEG (gradients and shapes, ~20-40 KB at 448 px), not noise."""
    from PIL import Image, ImageDraw

    img = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    draw = ImageDraw.Draw(img)
    for k in range(6):
        x, y = (seed * 37 + k * 71) % side, (seed * 53 + k * 29) % side
        draw.ellipse((x, y, x + side // 4, y + side // 5), fill=((k * 40) % 255, (seed * 60) % 255, 120))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


_IMAGES: dict = {}


def make_pair(i: int, side: int):
    """Pair `i` (made where it is used, so the pipeline graph does not carry every image)."""
    from quarry.pipelines.balance import BalancedPair
    from quarry.pipelines.caption import Candidate
    from quarry.schemas.common import ImageText, Origin

    if side not in _IMAGES:
        _IMAGES[side] = [_jpeg(side, k) for k in range(8)]
    images = _IMAGES[side]
    caption = f"a red bus number {i} crossing Westminster Bridge in London"
    s = ImageText(sample_id=f"id{i:07d}", source="bench", origin=Origin(file="f.tar", key=str(i)), caption=caption,
                  image_bytes=images[i % len(images)])
    return BalancedPair(Candidate(s, side, side, "JPEG", i), ("bus",), 3, "hard")


def make_pairs(n: int, side: int):
    return [make_pair(i, side) for i in range(n)]


async def bare(url: str, pairs, concurrency: int, template: str) -> float:
    """Requests/s of a plain asyncio loop: one httpx.AsyncClient, a semaphore, gather."""
    import httpx

    from quarry.operators import recaption as ops

    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    body = {"model": "bench", "temperature": 0.0, "max_tokens": 512, "seed": 0, "n": 1}
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:
        async def one(p):
            c = p.element
            payload = json.dumps({**body, "messages": ops.messages_for(template, c.caption, "en",
                                                                       c.sample.image_bytes)}).encode()
            async with sem:
                r = await client.post(url, content=payload, headers={"Content-Type": "application/json"})
            return r.json()["choices"][0]["message"]["content"]

        t0 = time.perf_counter()
        texts = await asyncio.gather(*(one(p) for p in pairs))
        took = time.perf_counter() - t0
    assert len(texts) == len(pairs)
    return len(pairs) / took


def _count(out_dir: str) -> dict:
    from quarry.pipelines.stats import read_counts

    return read_counts(out_dir)


def stage(base_url: str, n: int, side: int, concurrency: int, template: str, out_dir: str,
          identity: bool = False) -> float:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from quarry.pipelines.recaption import Recaption
    from quarry.schemas.caption import RecaptionConfig

    cfg = RecaptionConfig(enabled=True, model="bench", base_url=base_url, max_concurrency=concurrency,
                          preflight=False, timeout_s=60)
    t0 = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        items = p | beam.Create(range(n), reshuffle=False) | "Pairs" >> beam.Map(make_pair, side)
        if identity:
            items | "Count" >> beam.combiners.Count.Globally()
        else:
            items | Recaption(cfg, template, out_dir)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.5, help="the endpoint's fixed latency, seconds")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--image-side", type=int, default=448)
    args = ap.parse_args(argv)

    import tempfile

    from quarry.operators import recaption as ops

    q = mp.get_context("spawn").Queue()
    server = mp.get_context("spawn").Process(target=serve, args=(q, args.latency), daemon=True)
    server.start()
    port = q.get(timeout=30)
    base = f"http://127.0.0.1:{port}"
    try:
        template = ops.load_prompt()
        pairs = make_pairs(args.n, args.image_side)
        ideal = args.concurrency / args.latency
        bare_rps = asyncio.run(bare(base + "/v1/chat/completions", pairs, args.concurrency, template))
        with tempfile.TemporaryDirectory() as tmp:
            overhead = stage(base, args.n, args.image_side, args.concurrency, template, tmp, identity=True)
        with tempfile.TemporaryDirectory() as tmp:
            took = stage(base, args.n, args.image_side, args.concurrency, template, tmp)
            counts = _count(tmp)
        assert counts.get("recaption.in") == args.n, counts
        ok = counts.get("recaption_outcome.ok", 0)
        stage_rps = args.n / took
        net_rps = args.n / max(took - overhead, 1e-9)
        print(f"endpoint: fixed latency {args.latency:g}s, concurrency {args.concurrency}, {args.n} requests, "
              f"{args.image_side}px JPEG per request; ideal {ideal:.0f} req/s")
        print(f"bare asyncio loop (httpx):  {bare_rps:8.1f} req/s  ({bare_rps / ideal:.2f} of ideal)")
        print(f"recaption stage (Beam):     {stage_rps:8.1f} req/s  ({stage_rps / ideal:.2f} of ideal), "
              f"{took:.2f}s wall, {ok}/{args.n} ok")
        print(f"  of which pipeline start/stop (identity pipeline, same input): {overhead:.2f}s; "
              f"without it {net_rps:.1f} req/s")
        print(f"ratio stage / bare: {stage_rps / bare_rps:.2f} (without pipeline start/stop: "
              f"{net_rps / bare_rps:.2f})")
    finally:
        server.terminate()
        server.join(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
