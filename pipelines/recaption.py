"""The recaption stage of the caption DAG (GLM-4.5V §3.1, step 4), as one Beam step.

    BalancedPair -> [request in flight ... reply] -> check -> BalancedPair with recaption, caption_source
                                                         \\-> `recaption` reject (on_failure=reject)

Requests overlap: `_Recaption.process` hands each pair's request to the worker's `RecaptionClient` (an
asyncio loop with a keep-alive pool, `max_concurrency` in flight) and returns at once; finished pairs are
emitted as they come back, and `finish_bundle` waits for the rest. So one DoFn instance keeps
`max_concurrency` requests busy, and the stage's throughput is about max_concurrency / latency, whatever the
bundle size. At most `2 * max_concurrency` pairs wait in a worker, so memory stays flat.

Every pair comes out: kept (status `ok`, or a failure reason under `on_failure=keep_original`) or a reject.
Each outcome is counted into `DIR/_stats/recaption_outcome.<status>.json` for the manifest.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Optional

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

from quarry.operators import recaption as ops
from quarry.operators.base import Rejection
from quarry.pipelines.stage import REJECTED, count_stage, refused, to_reject
from quarry.pipelines.stats import write_stats
from quarry.schemas.caption import RecaptionConfig

OUTCOME = "outcome"  # the output tag of each pair's status, counted per status
OUTCOME_PREFIX = "recaption_outcome."  # DIR/_stats/<prefix><status>.json


def client_settings(cfg: RecaptionConfig) -> ops.ClientSettings:
    """The client's settings; the API key is read from `api_key_env` here, on the worker, never stored."""
    key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    return ops.ClientSettings(
        base_url=cfg.base_url, model=cfg.model, api_key=key, max_concurrency=cfg.max_concurrency,
        timeout_s=cfg.timeout_s, run_timeout_s=cfg.run_timeout_s, max_retries=cfg.max_retries,
        backoff_s=cfg.backoff_s, max_backoff_s=cfg.max_backoff_s, max_response_bytes=cfg.max_response_bytes,
        temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed,
        extra_body=tuple(sorted(cfg.extra_body.items())))


def checks_of(cfg: RecaptionConfig) -> ops.Checks:
    return ops.Checks(min_words=cfg.min_words, max_words=cfg.max_words, lang=cfg.lang,
                      entities=cfg.check_entities, numbers=cfg.check_numbers)


class _Recaption(beam.DoFn):
    """BalancedPair (its element a caption `Candidate` whose `sample.image_bytes` is the small JPEG) ->
    the pair with `recaption`, `recaption_status` and `caption_source` set, or a `recaption` reject."""

    def __init__(self, cfg: RecaptionConfig, template: str):
        self.cfg = cfg
        self.template = template
        self.checks = checks_of(cfg)

    def setup(self):
        self.client = ops.RecaptionClient(client_settings(self.cfg)).start()
        self.ocr = None
        if self.cfg.ocr_check:
            from quarry.operators.ocr.engine import make_engine
            from quarry.schemas.ocr_search import OcrEngineConfig

            self.ocr = make_engine(OcrEngineConfig()).load()

    def teardown(self):
        self.client.close()

    def start_bundle(self):
        self.pending: list = []

    def process(self, pair, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        c = pair.element
        original_lang = ops.detect_lang(c.caption)
        future = self.client.submit(ops.messages_for(self.template, c.caption, self.cfg.lang or original_lang,
                                                     c.sample.image_bytes))
        ocr_texts = self._read_text(c.sample.image_bytes) if self.ocr is not None else None  # while it is in flight
        self.pending.append((pair, future, (ocr_texts, original_lang), window, timestamp))
        while self.pending and (len(self.pending) >= 2 * self.cfg.max_concurrency or self.pending[0][1].done()):
            yield from self._emit(self.pending.pop(0), windowed=False)
        still = []
        for item in self.pending:  # others that are back already
            if item[1].done():
                yield from self._emit(item, windowed=False)
            else:
                still.append(item)
        self.pending = still

    def finish_bundle(self):
        pending, self.pending = self.pending, []
        for item in pending:
            yield from self._emit(item, windowed=True)

    def _read_text(self, image: bytes) -> list[str]:
        import io

        import numpy as np
        from PIL import Image

        with Image.open(io.BytesIO(image)) as im:
            lines = self.ocr.read(np.asarray(im.convert("RGB")))
        return [line.text for line in lines if line.score >= 0.8]

    def _emit(self, item, windowed: bool):
        pair, future, (ocr_texts, original_lang), window, timestamp = item
        for value in self.decide(pair, future.result(), ocr_texts, original_lang):
            if windowed:  # finish_bundle outputs carry their element's window
                if isinstance(value, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(value.tag, WindowedValue(value.value, timestamp, [window]))
                else:
                    yield WindowedValue(value, timestamp, [window])
            else:
                yield value

    def decide(self, pair, outcome: ops.Outcome, ocr_texts: Optional[list[str]], original_lang: Optional[str] = None):
        """The pair's outputs for one reply: its status, and the kept pair or its reject."""
        c = pair.element
        verdict: Optional[Rejection] = None
        if not outcome.ok:
            verdict = Rejection(outcome.reason, outcome.detail)
        else:
            verdict = ops.check_recaption(c.caption, outcome.text or "", self.template, self.checks, ocr_texts,
                                          original_lang)
        status = ops.OK if verdict is None else verdict.reason
        yield beam.pvalue.TaggedOutput(OUTCOME, status)
        if verdict is not None and self.cfg.on_failure == "reject":
            yield refused(to_reject(c.sample, "recaption", verdict))
            return
        text = outcome.text.strip() if verdict is None else None
        use = text is not None and ops.train_on_recaption(c.sample_id, self.cfg.merge_ratio, self.cfg.seed)
        yield pair._replace(element=replace(c, recaption=text, recaption_status=status,
                                            caption_source="recaption" if use else "original"))


def _write_outcomes(output_dir: str, counts) -> None:
    for status, n in counts:
        name = OUTCOME_PREFIX + status
        write_stats(output_dir, name, {"name": name, "count": n})


class Recaption(beam.PTransform):
    """PCollection[BalancedPair] -> (kept BalancedPair, rejected Reject); counts `recaption.in` / `.out` and
    each outcome into `output_dir` when given."""

    def __init__(self, cfg: RecaptionConfig, template: str, output_dir: Optional[str] = None):
        super().__init__()
        self.cfg = cfg
        self.template = template
        self.output_dir = output_dir

    def expand(self, pairs):
        out = pairs | "Recaption" >> beam.ParDo(_Recaption(self.cfg, self.template)).with_outputs(
            REJECTED, OUTCOME, main="kept")
        if self.output_dir:
            count_stage(self.output_dir, "recaption", pairs, out.kept)
            output_dir = self.output_dir
            (out[OUTCOME] | "CountOutcomes" >> beam.combiners.Count.PerElement()
             | "OutcomeList" >> beam.combiners.ToList()
             | "WriteOutcomes" >> beam.Map(lambda counts: _write_outcomes(output_dir, counts)))
        return out.kept, out[REJECTED]
