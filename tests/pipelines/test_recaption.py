"""The Recaption transform in a real Beam pipeline against a fake, deterministic chat endpoint: every pair comes
out once (kept or rejected, with its reason), the outcome counts add up, the merge choice is seeded by id."""

from __future__ import annotations

import json
import re

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from quarry.operators import recaption as ops
from quarry.pipelines.balance import BalancedPair
from quarry.pipelines.caption import Candidate
from quarry.pipelines.recaption import OUTCOME_PREFIX, Recaption
from quarry.pipelines.stats import read_counts
from quarry.schemas.caption import RecaptionConfig
from quarry.schemas.common import ImageText, Origin

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
TAIL = ", standing in clear afternoon light with soft shadows on the ground and a calm sky behind."


def fake_reply(caption: str):
    """What the fake model answers for a caption: markers in the caption pick a failure."""
    if "[500]" in caption:
        return 500, {"error": "boom"}, None
    if "[429]" in caption:
        return 429, {}, {"Retry-After": "0"}
    if "[junk]" in caption:
        return 200, b"<html>gateway</html>", None
    reply = {"[empty]": "", "[huge]": "word " * 5000, "[zh]": "一只猫坐在沙发上，阳光从窗户照进来，房间里很安静。",
             "[drop]": "A large building" + TAIL, "[sorry]": "I'm sorry, I can't describe this image."}
    for marker, text in reply.items():
        if marker in caption:
            return 200, _completion(text), None
    return 200, _completion(f"Detailed view: {caption.replace('[ok]', '').strip()}{TAIL}"), None


def _completion(text):
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


def behave(server, body, n):
    prompt = body["messages"][0]["content"][-1]["text"]
    caption = re.search(r"<original>(.*?)</original>", prompt, re.S)
    if caption is None:  # a test's own prompt: echo it back
        return 200, _completion(prompt), None
    return fake_reply(caption.group(1))


CAPTIONS = {
    "ok1": "[ok] a red bus near Big Ben in London", "ok2": "[ok] 3 dogs on a beach", "ok3": "[ok] a cat on a sofa",
    "ok4": "[ok] a tall lighthouse by the sea", "e500": "[500] a boat", "e429": "[429] a boat", "junk": "[junk] a boat",
    "empty": "[empty] a boat", "huge": "[huge] a boat", "zh": "[zh] a cat on a sofa", "drop": "[drop] the Eiffel Tower seen from the river at night",
    "sorry": "[sorry] a boat",
}
EXPECTED = {"ok1": "ok", "ok2": "ok", "ok3": "ok", "ok4": "ok", "e500": ops.HTTP_ERROR, "e429": ops.RATE_LIMITED,
            "junk": ops.MALFORMED_RESPONSE, "empty": ops.EMPTY, "huge": ops.TOO_LONG, "zh": ops.WRONG_LANGUAGE,
            "drop": ops.DROPPED_ENTITY, "sorry": ops.REFUSAL}


def pairs():
    out = []
    for key, caption in CAPTIONS.items():
        s = ImageText(sample_id=f"id-{key}", source="src", origin=Origin(file="f.tar", key=key), caption=caption,
                      image_bytes=JPEG)
        out.append(BalancedPair(Candidate(s, 320, 240, "JPEG", 1), ("bus",), 3, "hard"))
    return out


def cfg(url, **kw):
    base = dict(enabled=True, model="recap", base_url=url, backoff_s=0.0, max_retries=1, timeout_s=5.0,
                max_concurrency=4, merge_ratio=0.5, preflight=False)
    base.update(kw)
    return RecaptionConfig(**base)


def _save(item, folder: str) -> None:
    import os
    import pickle
    import uuid

    with open(os.path.join(folder, uuid.uuid4().hex), "wb") as fh:
        pickle.dump(item, fh)


def _load(folder):
    import pickle

    return [pickle.loads(f.read_bytes()) for f in sorted(folder.iterdir())]


def run(config, out_dir, prompt=None):
    """The transform's two outputs, as lists (each element pickled to a file: the runner's copies of a closure's
    list would stay empty)."""
    kept_dir, rejected_dir = out_dir / "kept", out_dir / "rejected"
    kept_dir.mkdir()
    rejected_dir.mkdir()
    with TestPipeline() as p:
        k, r = p | beam.Create(pairs()) | Recaption(config, prompt or ops.load_prompt(), str(out_dir))
        k | "K" >> beam.Map(_save, str(kept_dir))
        r | "R" >> beam.Map(_save, str(rejected_dir))
    return _load(kept_dir), _load(rejected_dir)


def test_reject_mode_every_pair_is_kept_or_rejected_with_its_reason(chat_server, tmp_path):
    s = chat_server(behave)
    kept, rejected = run(cfg(s.base_url), tmp_path)
    got = {p.element.sample.origin.key: p.element.recaption_status for p in kept}
    got.update({r.origin.key: r.reason for r in rejected})
    assert got == EXPECTED  # every pair, once
    assert len(kept) + len(rejected) == len(CAPTIONS)
    assert all(r.stage == "recaption" and r.detail for r in rejected)
    ok1 = next(p.element for p in kept if p.element.sample_id == "id-ok1")
    assert ok1.recaption.startswith("Detailed view: a red bus near Big Ben in London")
    assert {p.element.caption_source for p in kept} <= {"original", "recaption"}
    for p in kept:  # the merge choice is the id's
        want = "recaption" if ops.train_on_recaption(p.element.sample_id, 0.5, 0) else "original"
        assert p.element.caption_source == want
    counts = read_counts(str(tmp_path))
    outcomes = {k[len(OUTCOME_PREFIX):]: n for k, n in counts.items() if k.startswith(OUTCOME_PREFIX)}
    assert sum(outcomes.values()) == counts["recaption.in"] == len(CAPTIONS)
    assert outcomes["ok"] == counts["recaption.out"] == 4 and outcomes[ops.HTTP_ERROR] == 1
    # retried where it may help: 500 and 429 twice (max_retries=1), the rest once
    bodies = [json.loads(r["raw"]) for r in s.requests]
    asked = [re.search(r"<original>(.*?)</original>", b["messages"][0]["content"][-1]["text"]).group(1) for b in bodies]
    assert asked.count(CAPTIONS["e500"]) == asked.count(CAPTIONS["e429"]) == 2
    assert asked.count(CAPTIONS["junk"]) == asked.count(CAPTIONS["ok1"]) == 1


def test_keep_original_mode_keeps_every_pair_with_its_status(chat_server, tmp_path):
    s = chat_server(behave)
    kept, rejected = run(cfg(s.base_url, on_failure="keep_original", merge_ratio=1.0), tmp_path)
    assert rejected == []
    by_key = {p.element.sample.origin.key: p.element for p in kept}
    assert {k: c.recaption_status for k, c in by_key.items()} == EXPECTED
    for key, c in by_key.items():
        if EXPECTED[key] == "ok":
            assert c.caption_source == "recaption" and c.recaption  # merge_ratio 1: every usable one
        else:
            assert (c.caption_source, c.recaption) == ("original", None)


def test_endpoint_down_rejects_every_pair(tmp_path):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    kept, rejected = run(cfg(f"http://127.0.0.1:{port}"), tmp_path)
    assert kept == [] and {r.reason for r in rejected} == {ops.UNREACHABLE} and len(rejected) == len(CAPTIONS)


def test_prompt_echoed_back_is_a_reject(chat_server, tmp_path):
    s = chat_server(behave)
    prompt = ("Look at the picture carefully and write one factual and detailed caption for it, keeping every name "
              "and number of this caption: {caption}")
    _, rejected = run(cfg(s.base_url), tmp_path, prompt=prompt)
    assert {r.reason for r in rejected} == {ops.PROMPT_ECHO} and len(rejected) == len(CAPTIONS)


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_merge_ratio_bounds(chat_server, tmp_path, ratio):
    s = chat_server(behave)
    kept, _ = run(cfg(s.base_url, merge_ratio=ratio), tmp_path)
    assert {p.element.caption_source for p in kept} == {"recaption" if ratio else "original"}


DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


@pytest.mark.skipif(not __import__("os").path.exists(DEJAVU), reason="fonts-dejavu-core is not installed")
@pytest.mark.parametrize("quoted, status", [("OPEN 24 HOURS", "ok"), ("CLOSED FOREVER", ops.OCR_CONTRADICTION)])
def test_ocr_check_reads_the_image_and_rejects_a_contradicting_quote(chat_server, quoted, status):
    """recaption.ocr_check: rapidocr (models in its wheel) reads the JPEG the request carried; a quote the image
    does not show is `ocr_contradiction`."""
    pytest.importorskip("rapidocr")
    import io

    from PIL import Image, ImageDraw, ImageFont

    from quarry.pipelines.recaption import _Recaption

    im = Image.new("RGB", (640, 448), (235, 235, 235))
    ImageDraw.Draw(im).text((60, 180), "OPEN 24 HOURS", font=ImageFont.truetype(DEJAVU, 56), fill=(10, 10, 10))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    reply = f'A shop window with a sign that reads "{quoted}" in black capital letters{TAIL}'
    s = chat_server(lambda server, body, n: (200, _completion(reply), None))
    sample = ImageText(sample_id="sign", source="src", origin=Origin(file="f", key="sign"),
                       caption="a shop window with a sign", image_bytes=buf.getvalue())
    fn = _Recaption(cfg(s.base_url, ocr_check=True, on_failure="keep_original"), ops.load_prompt())
    fn.setup()
    try:
        fn.start_bundle()
        out = list(fn.process(BalancedPair(Candidate(sample, 640, 448, "JPEG", 1), (), None, "medium"))) + [
            getattr(v, "value", v) for v in fn.finish_bundle()]
    finally:
        fn.teardown()
    values = [getattr(o, "value", o) for o in out]
    kept = [v for v in values if isinstance(v, BalancedPair)]
    assert len(kept) == 1 and kept[0].element.recaption_status == status
    assert status in [v for v in values if isinstance(v, str)]  # the outcome
