"""The grade pipeline: samples + rollouts -> pass@k tiers (GLM-4.5V §5).

Wiring (every step labelled)::

    samples files -> ReadSamples (JSONL line / Parquet row -> dict; bad -> Reject at `read`)
                  -> ParseSamples (required fields, label_tier, the RL contract) -> (sample_id, sample)
                  -> [JoinImages: a run's images/ by image_id (every one of image_ids, in order); missing -> Reject at `join`]
                  -> [ToFillIn: rows with `options` -> fill-in-the-blank; bad -> Reject at `mc`]
    rollout files -> ReadRollouts -> ParseRollouts -> runs of consecutive rows of one sample id:
                                                      (sample_id, ((model, response), ...))
      or, with `generate` and no files: samples -> BatchElements -> Generate (k per sample)
    CoGroupByKey -> Grade: per sample id, score each rollout with the verifier of the
                    sample's task, tally per model (memory: one entry per model),
                    pass@k per model, mean over models, tier. Tasks mapped to the `judge`
                    kind are scored by the model judge (batched per sample); with
                    grade.judge_fallback, exact/numeric mismatches are asked of the judge too.

Accounting (one-to-one on samples): each sample row ends as a `GradeRow` or a
`Reject` (`read`: invalid_json, missing_field, invalid_label_tier, invalid_verifier, empty_answer,
unreadable_file; `mc`: mc_not_convertible; `join`: duplicate_sample_id, missing_image; `grade`: no_rollouts,
no_verifier). Rollouts are not inputs of that accounting: rollouts whose
sample id no sample has, and rollout lines that cannot be read, are counted
(`_stats`: stages `rollouts_read` and `rollouts_join`, and
`_stats/grade_summary.json`), not rejected row by row; so are generated
rollouts (`rollouts_generate`: inputs - outputs = failed requests, kept as
null responses scored 0) and judge calls (`judge`: inputs - outputs = judge errors).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from typing import Any, Iterator, NamedTuple, Optional, Union

import apache_beam as beam

from quarry.operators import decontam as decontam_ops
from quarry.operators.base import Rejection
from quarry.operators.grade import contract, tiers
from quarry.operators.grade import mc as mc_ops
from quarry.operators.grade.judge import JUDGE_ERROR, judge_verifier_from
from quarry.operators.grade.mc import MC_NOT_CONVERTIBLE, FillIn, to_fill_in
from quarry.operators.grade.rollouts import generate_rollouts
from quarry.operators.grade.verify import MISMATCH, TASK_VERIFIERS, Verdict, VerifierKind
from quarry.operators.inputs import reasons
from quarry.operators.inputs.records import Unreadable
from quarry.pipelines.read import (
    InputFile,
    ReadFiles,
    ReadRecords,
    RowRecord,
    beside,
    clean_source,
    read_limited,
    read_reject,
    read_rows,
)
from quarry.pipelines.stage import REJECTED, count_stage, refused, reject_row
from quarry.pipelines.stats import CountTo, read_stats, write_stats
from quarry.schemas.common import ImageCell, ImageRecord, Origin, Reject
from quarry.schemas.grade import GenerateSection, GradeConfig, GradeRow, GradeSection, JudgeSection
from quarry.schemas.rl import VerifierSpec

SAMPLE_COLUMNS = ("sample_id", "task", "question", "answer")
ROLLOUT_COLUMNS = ("sample_id", "model", "response")
# The rest of the RL contract (schemas/rl.py) and what grade carries or converts.
OPTIONAL_SAMPLE_COLUMNS = ("source", "label_tier", "options", "image", "image_id", "image_ids", "answer_aliases",
                           "verifier")
IMAGE_COLUMNS = ("image_id", "image", "width", "height", "format")  # a run's DIR/images table
SUMMARY_STATS = "grade_summary"
SUMMARY_FILE = f"{SUMMARY_STATS}.json"  # under _stats/

# The join and grade steps' own reasons (no operator decides them); read rejects are the reader's.
DUPLICATE_SAMPLE_ID = "duplicate_sample_id"  # join: a later row (in input order) with the same sample_id
MISSING_IMAGE = reasons.MISSING_IMAGE  # join: a row's image_id is in none of the run's images tables
NO_VERIFIER = "no_verifier"  # grade: the row names no verifier and its task has no default
NO_ROLLOUTS = "no_rollouts"  # grade: no rollout names the sample
REASONS: tuple[str, ...] = (DUPLICATE_SAMPLE_ID, NO_VERIFIER, NO_ROLLOUTS)


# --- parsing rows into samples and rollouts ----------------------------------------------


def _id_of(v: Any) -> Optional[str]:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str) and v.strip():
        return v.strip()
    return None


def _read_reject(rec: RowRecord, source: str, reason: str, detail: str, sample_id: Optional[str] = None) -> Reject:
    return read_reject(rec.file, source, Unreadable(rec.key, reason, detail), sample_id)


def parse_sample(rec: RowRecord, default_source: str) -> Union[dict, Reject]:
    """A sample row -> a plain dict (cheap to pickle) or a Reject at stage `read`.

    `answer` may be a string or a list (Parquet list column / JSON array); a
    list is kept as JSON text in the output row. An `image` (bytes, a Hugging
    Face `{bytes, path}` struct, or in JSONL a path relative to the file) is
    carried to the output row; one that cannot be read is `read/missing_image`.
    """
    if rec.row is None:
        return _read_reject(rec, default_source, rec.reason, rec.detail)
    row = rec.row
    source = row.get("source") if isinstance(row.get("source"), str) and row.get("source") else default_source
    sid = _id_of(row.get("sample_id"))
    if sid is None:
        return _read_reject(rec, source, reasons.MISSING_FIELD, "no sample_id (a non-empty string or an integer)")
    for name in ("task", "question"):
        if not isinstance(row.get(name), str) or not row[name].strip():
            return _read_reject(rec, source, reasons.MISSING_FIELD, f"{name} is not a non-empty string", sid)
    answer = row.get("answer")
    if isinstance(answer, (list, tuple)):
        answer_text = json.dumps(list(answer), ensure_ascii=False)
    elif isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer_text = str(answer)
    elif isinstance(answer, str):
        answer_text = answer
    else:
        return _read_reject(rec, source, reasons.MISSING_FIELD, f"answer is {type(answer).__name__}", sid)
    label = tiers.normalise_label(row.get("label_tier"))
    if isinstance(label, ValueError):
        return _read_reject(rec, source, reasons.INVALID_LABEL_TIER, str(label), sid)
    spec = contract.parse_spec(row.get("verifier"))
    if isinstance(spec, str):
        return _read_reject(rec, source, contract.INVALID_VERIFIER, spec, sid)
    # A row with no rule at all is grade/no_verifier (not an RL task: svg_to_image), whatever its answer.
    has_rule = spec is not None or row["task"].strip() in TASK_VERIFIERS
    if has_rule and not contract.unbox(answer_text).strip():
        return _read_reject(rec, source, contract.EMPTY_ANSWER, "answer is empty: nothing to judge a rollout by", sid)
    aliases = contract.parse_aliases(row.get("answer_aliases"))
    if isinstance(aliases, str):
        return _read_reject(rec, source, reasons.MISSING_FIELD, aliases, sid)
    out = {
        "sample_id": sid, "source": clean_source(source), "task": row["task"].strip(),
        "question": row["question"], "answer": answer_text, "label_tier": label,
        "file": rec.file, "key": rec.key, "aliases": aliases,
        "verifier": spec.model_dump() if spec is not None else None,  # a dict: cheap to pickle
    }
    if isinstance(row.get("image_id"), str) and row["image_id"]:
        out["image_id"] = row["image_id"]
    ids = row.get("image_ids")
    if isinstance(ids, (list, tuple)) and len(ids) > 1:  # a question over several pictures (imagemining)
        if not all(isinstance(i, str) and i for i in ids):
            return _read_reject(rec, source, reasons.MISSING_FIELD, "image_ids holds a non-string or empty id", sid)
        if out.get("image_id", ids[0]) != ids[0]:
            return _read_reject(rec, source, reasons.MISSING_FIELD, "image_ids[0] is not the row's image_id", sid)
        out["image_id"], out["image_ids"] = ids[0], list(ids)
    if row.get("image") is not None:
        image = _image_bytes(row["image"], rec.file)
        if isinstance(image, str):
            return _read_reject(rec, source, reasons.MISSING_IMAGE, image, sid)
        out["image"] = image
    if row.get("options") is not None:  # a multiple-choice item: keep what `to_fill_in` needs
        options = parse_options(row["options"])
        if isinstance(options, str):
            out["options_error"] = options
        else:
            out["options"] = options
        out["raw_answer"] = answer if isinstance(answer, int) and not isinstance(answer, bool) else answer_text
    return out


_MAX_IMAGE_BYTES = 50 * 1024 * 1024


def decontam_probe(sample: dict):
    """What the decontam stage checks of a parsed sample: question, answer, options and image."""
    from quarry.pipelines.decontam import Probe

    texts = [("question", sample["question"]), ("answer", sample["answer"])]
    texts += [(f"options[{i}]", o) for i, o in enumerate(sample.get("options") or []) if isinstance(o, str)]
    image = sample.get("image")
    images = tuple((f"image[{i}]", im) for i, im in enumerate(image)) if isinstance(image, list) else \
        ((("image", image),) if image else ())
    return Probe(sample["sample_id"], sample["source"], Origin(file=sample["file"], key=sample["key"]),
                 tuple(texts), images)


def _image_bytes(value: Any, table_path: str) -> Union[bytes, str]:
    """Image bytes from a cell: bytes, `{bytes, path}`, or a path (relative to the table); else why not."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value:
        return read_limited(beside(value, table_path), _MAX_IMAGE_BYTES)
    return f"image cell holds {type(value).__name__}"


def parse_options(value: Any) -> Union[list[str], str]:
    """`options` as a list of strings (a list, or a JSON list as text); a str saying what is wrong otherwise."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return "options is text but not a JSON list"
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        return f"options is {type(value).__name__}, not a list"
    if not all(isinstance(o, str) for o in value):
        return "options holds a non-string"
    return value


def fill_in_sample(sample: dict) -> Union[dict, Reject]:
    """A multiple-choice sample -> the fill-in-the-blank one (originals kept) or a Reject at stage `mc`.

    A sample without options is returned as it is.
    """
    if "options" not in sample and "options_error" not in sample:
        return sample
    if "options_error" in sample:
        return sample_reject(sample, "mc", (MC_NOT_CONVERTIBLE, sample["options_error"]))
    got = to_fill_in(sample["question"], sample["options"], sample["raw_answer"])
    if not isinstance(got, FillIn):  # a Rejection
        return sample_reject(sample, "mc", got)
    out = {k: v for k, v in sample.items() if k not in ("options", "raw_answer")}
    out.update(question=got.question, answer=got.answer, original_question=got.original_question,
               original_options=list(got.original_options), original_answer=sample["answer"])
    return out


def parse_rollout(rec: RowRecord) -> Optional[tuple[str, tuple[str, str]]]:
    """A rollout row -> (sample_id, (model, response)); None when unusable. A null response is ""."""
    if rec.row is None:
        return None
    sid, model = _id_of(rec.row.get("sample_id")), rec.row.get("model")
    if sid is None or not isinstance(model, str) or not model:
        return None
    response = rec.row.get("response")
    return sid, (model, response if isinstance(response, str) else "")


def input_order(sample: dict) -> tuple:
    """Sort key of a sample's place in the input: file, then line/row number as a number (`line:2` before
    `line:12`), then other keys (tar members) as text."""
    m = re.fullmatch(r"(?:line|row):(\d+)", sample["key"])
    return (sample["file"], 0, int(m.group(1)), "") if m else (sample["file"], 1, 0, sample["key"])


VERIFIER_ERROR = "verifier_error"
_logged_verifier_error = False


def verdict_of(verifier: Any, response: str, reference: Any) -> Verdict:
    """A verifier's Verdict; reward 0 (never an exception) for anything the verifier chokes on.

    Verifiers are written never to raise on model output, so an exception here
    is a bug: the first one per process is logged with its traceback and the
    grade step counts them all (Beam counter grade/verifier_errors).
    """
    global _logged_verifier_error
    try:
        verdict = verifier(response, reference)
    except Exception:  # noqa: BLE001 - a grader must not crash on one bad rollout
        if not _logged_verifier_error:
            _logged_verifier_error = True
            logging.getLogger(__name__).exception("verifier %r raised; rollouts it raises on score 0", verifier)
        return Verdict(0.0, VERIFIER_ERROR)
    return verdict if isinstance(verdict, Verdict) else Verdict(0.0, VERIFIER_ERROR)


def score(verifier: Any, response: str, reference: Any) -> float:
    """A verifier's reward; 0.0 (never an exception) for anything the verifier chokes on."""
    return float(verdict_of(verifier, response, reference).reward)


def judge_verdicts(judge: Any, responses: list[str], answer: str, question: str) -> list[Verdict]:
    """The judge's Verdicts for one sample's responses; judge_error for all if the batch raises."""
    try:
        return judge.batch(responses, [answer] * len(responses), [question] * len(responses))
    except Exception:  # noqa: BLE001 - a grader must not crash on the judge
        return [Verdict(0.0, JUDGE_ERROR)] * len(responses)


# --- Beam ---------------------------------------------------------------------------------


# Rollouts cross the join as runs: (sample_id, ((model, response), ...)) for consecutive rows of one file that
# name the same sample. Rollout files are written k per sample in a row, so the shuffle and every per-element
# step before it see ~k times fewer elements (the profile of 200k rollouts: Beam's per-element work was the
# largest cost). A file in any other order still works: its runs are just shorter.
MAX_RUN = 256  # rollouts per run: bounds one element's size whatever the file's order


def rollout_runs(pairs: Iterator[tuple[str, tuple[str, str]]]) -> Iterator[tuple[str, tuple]]:
    """(sample_id, (model, response)) pairs -> runs of consecutive pairs with one sample_id (<= MAX_RUN)."""
    sid, run = None, []
    for key, rollout in pairs:
        if key != sid or len(run) >= MAX_RUN:
            if run:
                yield sid, tuple(run)
            sid, run = key, []
        run.append(rollout)
    if run:
        yield sid, tuple(run)


def run_sizes(runs, label: str):
    """Rollouts per run (for counts of rollouts, not of runs)."""
    return runs | label >> beam.Map(lambda kv: len(kv[1]))


class _ReadRollouts(beam.DoFn):
    INVALID = "invalid"

    def process(self, f: InputFile):
        invalid = []

        def parsed():
            for rec in read_rows(f, ROLLOUT_COLUMNS):
                out = parse_rollout(rec)
                if out is None:
                    invalid.append(1)
                else:
                    yield out

        for run in rollout_runs(parsed()):
            yield run
            if invalid:
                yield beam.pvalue.TaggedOutput(self.INVALID, len(invalid))
                invalid.clear()
        if invalid:
            yield beam.pvalue.TaggedOutput(self.INVALID, len(invalid))


def read_samples(f: InputFile, default_source: str) -> Iterator[Union[dict, Reject]]:
    """One sample file -> samples (dicts) and read rejects."""
    for rec in read_rows(f, SAMPLE_COLUMNS + OPTIONAL_SAMPLE_COLUMNS):
        yield parse_sample(rec, default_source)


class ReadSamples(ReadRecords):
    """Sample files -> (samples as dicts, rejects at stage `read`)."""

    def __init__(self, files: list[InputFile], default_source: str):
        super().__init__(files, functools.partial(read_samples, default_source=clean_source(default_source)))


class _ToFillIn(beam.DoFn):
    def process(self, sample: dict):
        out = fill_in_sample(sample)
        yield refused(out) if isinstance(out, Reject) else out


class MultipleChoiceToFillIn(beam.PTransform):
    """Samples -> (samples with multiple-choice ones as fill-in-the-blank, rejects at stage `mc`)."""

    def expand(self, samples):
        out = samples | "ToFillIn" >> beam.ParDo(_ToFillIn()).with_outputs(REJECTED, main="samples")
        return out.samples, out[REJECTED]


class _Generate(beam.DoFn):
    """A batch of samples -> runs of (sample_id, ((model, response), ...)), k per sample; a failure is a ""
    response. The OK output counts answered requests per run."""

    OK = "ok"

    def __init__(self, section: GenerateSection):
        self.section = section
        self.client = None

    def setup(self):
        from quarry.operators.chat_client import ChatClient, ChatClientConfig

        self.client = ChatClient(ChatClientConfig(**self.section.client_fields()))

    def process(self, batch: list):
        k, model = self.section.k, self.section.model
        asks = [{"sample_id": s["sample_id"], "question": s["question"], "image": s.get("image")} for s in batch]
        try:
            got = list(generate_rollouts(asks, self.client, k, use_n=self.section.use_n, chunk_size=len(asks)))
        except Exception as e:  # noqa: BLE001 - one bad batch must not fail the run
            got = [(a["sample_id"], model, None, f"{type(e).__name__}: {e}") for a in asks for _ in range(k)]
        answered = sum(isinstance(response, str) for _, _, response, _ in got)
        yield from rollout_runs((sid, (m, r if isinstance(r, str) else "")) for sid, m, r, _ in got)
        if answered:
            yield beam.pvalue.TaggedOutput(self.OK, answered)


class GenerateRollouts(beam.PTransform):
    """Samples -> runs of (sample_id, ((model, response), ...)), k per sample, from the `generate` endpoint.

    Failed requests become "" responses (scored 0); `rollouts_generate` counts all
    rollouts in, the answered ones out.
    """

    def __init__(self, section: GenerateSection, output: str):
        super().__init__()
        self.section, self.output = section, output

    def expand(self, samples):
        out = (
            samples
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.section.batch_size)
            | "Generate" >> beam.ParDo(_Generate(self.section)).with_outputs(_Generate.OK, main="rollouts")
        )
        run_sizes(out.rollouts, "GeneratedSizes") | "CountGenerated" >> CountTo(self.output, "rollouts_generate.in",
                                                                                sum_values=True)
        out[_Generate.OK] | "CountAnswered" >> CountTo(self.output, "rollouts_generate.out", sum_values=True)
        return out.rollouts


class ReadRollouts(beam.PTransform):
    """Rollout files -> (runs of (sample_id, ((model, response), ...)), counts of invalid rows)."""

    def __init__(self, files: list[InputFile]):
        super().__init__()
        self.files = files

    def expand(self, pbegin):
        out = pbegin | ReadFiles(self.files, _ReadRollouts(), _ReadRollouts.INVALID)
        return out.main, out[_ReadRollouts.INVALID]


class _Grade(beam.DoFn):
    """(sample_id, {samples, rollouts}) -> GradeRow | Reject (tagged) | unknown-rollout counts (tagged)."""

    UNKNOWN = "unknown"
    JUDGED = "judged"

    def __init__(self, grade: GradeSection, rule_verifiers: dict[str, VerifierSpec], judge_tasks: set[str],
                 judge: Optional[JudgeSection]):
        """`rule_verifiers`, `judge_tasks`: `verifiers` split (GradeConfig.rule_verifiers, judge_tasks)."""
        self.grade = grade
        self.rule = tiers.TierRule(grade.tiers.very_easy_at, grade.tiers.easy_at, grade.tiers.medium_at,
                                   grade.tiers.hard_above)
        self._rule_verifiers = rule_verifiers
        self._judge_section = judge
        self._verifiers: dict[tuple, tuple[Any, Optional[VerifierSpec]]] = {}
        self._judge: Any = None
        self._judge_tasks = judge_tasks
        self._verifier_errors = beam.metrics.Metrics.counter("grade", "verifier_errors")

    def setup(self):
        if self._judge_section is not None:
            self._judge = judge_verifier_from(self._judge_section.verifier_mapping())

    def _verifier(self, sample: dict) -> tuple[Any, Optional[VerifierSpec]]:
        """(the sample's verifier or a ValueError saying why none, the spec it was built from; None for the
        judge). Cached per spec: rows of one DAG name a handful."""
        task = sample["task"]
        if task in self._judge_tasks:
            if self._judge is None:
                return ValueError(f"task {task!r} is mapped to the judge but no judge is configured"), None
            return self._judge, None
        raw = sample.get("verifier")
        # A spec with a per-row target box (gui actions) is built per row (cheap); the rest are cached, so the
        # cache stays as small as the set of distinct rules.
        key = (task, None if not raw else tuple((k, v) for k, v in raw.items() if k != "box"))
        if raw and raw.get("box") is not None:
            key = None
        if key is not None and key in self._verifiers:
            return self._verifiers[key]
        spec = contract.resolve(task, VerifierSpec.model_validate(raw) if raw else None, self._rule_verifiers)
        got = (ValueError(spec), None) if isinstance(spec, str) else (contract.build(spec), spec)
        if key is not None:
            self._verifiers[key] = got
        return got

    def process(self, element):
        sid, grouped = element
        samples = sorted(grouped["samples"], key=input_order)
        runs = grouped["rollouts"]
        if not samples:
            yield beam.pvalue.TaggedOutput(self.UNKNOWN, sum(len(run) for run in runs))
            return
        rollouts = [r for run in runs for r in run]
        sample, dups = samples[0], samples[1:]
        for d in dups:
            yield refused(sample_reject(
                d, "join", (DUPLICATE_SAMPLE_ID, f"sample_id also at {sample['file']} {sample['key']}")))
        verifier, spec = self._verifier(sample)
        if isinstance(verifier, ValueError):
            yield refused(sample_reject(sample, "grade", (NO_VERIFIER, str(verifier))))
            return
        tally = tiers.SampleTally(self.grade.correct_at)
        to_judge: list[tuple[str, str]] = []  # (model, response): one sample's rollouts at most
        if spec is None:  # the model judge
            to_judge = [(model, response) for model, response in rollouts]
        else:
            reference = contract.reference(spec, sample["answer"], sample.get("aliases") or ())
            # "exact match, falling back to a model judge" (GLM-4.5V Table 1): for every exact/numeric row with
            # grade.judge_fallback, or for the rows whose spec asks for it (VQA-type answers), when a judge is set.
            fallback = (self._judge is not None and spec.kind in (VerifierKind.EXACT.value, VerifierKind.NUMERIC.value)
                        and (self.grade.judge_fallback or spec.judge))
            for model, response in rollouts:  # streamed: the tally holds one entry per model
                v = verdict_of(verifier, response, reference)
                if v.reason == VERIFIER_ERROR:
                    self._verifier_errors.inc()
                if fallback and v.reward == 0.0 and v.reason == MISMATCH:
                    to_judge.append((model, response))
                else:
                    tally.add(model, float(v.reward))
        if to_judge:
            verdicts = judge_verdicts(self._judge, [r for _, r in to_judge], sample["answer"], sample["question"])
            for (model, _), v in zip(to_judge, verdicts):
                tally.add(model, float(v.reward))
                yield beam.pvalue.TaggedOutput(self.JUDGED, v.reason != JUDGE_ERROR)
        if not tally.models:
            yield refused(sample_reject(sample, "grade", (NO_ROLLOUTS, "no rollout names this sample_id")))
            return
        yield grade_row(sample, tally, self.grade.k, self.rule, spec)


def sample_reject(sample: dict, stage: str, verdict: Union[Rejection, tuple[str, str]]) -> Reject:
    """`reject_row` for a parsed sample (a dict: its origin is `file` and `key`)."""
    return reject_row(sample["sample_id"], sample["source"], Origin(file=sample["file"], key=sample["key"]), stage,
                      verdict)


def grade_row(sample: dict, tally: tiers.SampleTally, k: int, rule: tiers.TierRule,
              spec: Optional[VerifierSpec] = None) -> GradeRow:
    per_model = tiers.model_pass_rates(tally, k)
    pass_rate = tiers.merged_pass_rate(per_model)
    pass_tier = rule.tier(pass_rate)
    n = tally.n
    return GradeRow(
        sample_id=sample["sample_id"], source=sample["source"], task=sample["task"],
        tier=tiers.final_tier(pass_tier, sample["label_tier"]),
        origin=Origin(file=sample["file"], key=sample["key"]),
        question=sample["question"], answer=sample["answer"],
        original_question=sample.get("original_question"), original_options=sample.get("original_options"),
        original_answer=sample.get("original_answer"),
        pass_rate=pass_rate, mean_reward=tally.reward_sum / n if n else 0.0,
        n_rollouts=n, n_correct=tally.correct, models=per_model,
        pass_tier=pass_tier, label_tier=sample["label_tier"], answer_aliases=sample.get("aliases") or [],
        verifier=spec, image_id=sample.get("image_id"), image_ids=sample.get("image_ids"),
        # rows that share an image keep its id (the images table is written once); others carry the bytes
        image=ImageCell(bytes=sample["image"]) if sample.get("image") and not sample.get("image_id") else None,
    )


class _ReadImageRecords(beam.DoFn):
    """A run's `DIR/images` shard -> (image_id, (bytes, width, height, format)); an unreadable row is skipped
    (the rows that use it become join/missing_image)."""

    INVALID = "invalid"

    def process(self, f: InputFile):
        for rec in read_rows(f, IMAGE_COLUMNS):
            row = rec.row
            image = row.get("image") if row else None
            data = image.get("bytes") if isinstance(image, dict) else None
            if not row or not isinstance(row.get("image_id"), str) or not isinstance(data, (bytes, bytearray)):
                yield beam.pvalue.TaggedOutput(self.INVALID, 1)
                continue
            yield row["image_id"], (bytes(data), int(row.get("width") or 0), int(row.get("height") or 0),
                                    str(row.get("format") or ""))


def _part_key(sample: dict) -> tuple[str, str, str]:
    """A sample row's identity for joining its pictures back (sample ids may repeat until the grade step)."""
    return sample["sample_id"], sample["file"], sample["key"]


class _JoinImage(beam.DoFn):
    """(image_id, {samples, images}) -> samples (bytes attached when asked), the image once, or missing_image.

    A sample over several pictures arrives as parts `(part key, index)`, one per picture; each part goes on
    with its bytes (None when missing) to `_AssembleImages`."""

    IMAGES = "images"
    PARTS = "parts"

    def __init__(self, attach: bool):
        self.attach = attach

    def process(self, element):
        image_id, grouped = element
        samples = list(grouped["samples"])
        if not samples:
            return  # an image no graded row uses
        found = next(iter(grouped["images"]), None)
        if found is not None:
            data, width, height, fmt = found
            yield beam.pvalue.TaggedOutput(self.IMAGES, ImageRecord(
                image_id=image_id, image=ImageCell(bytes=data), width=width, height=height, format=fmt))
        for sample in samples:
            if isinstance(sample, tuple):  # a part of a sample over several pictures
                key, index = sample
                yield beam.pvalue.TaggedOutput(self.PARTS, (key, (index, image_id, found[0] if found else None)))
            elif found is None:
                yield refused(sample_reject(sample, "join", (MISSING_IMAGE, f"image_id {image_id} is in none of "
                                                                            "the run's images tables")))
            else:
                yield {**sample, "image": found[0]} if self.attach else sample


class _AssembleImages(beam.DoFn):
    """(part key, {sample, parts}) -> the sample with its pictures in order (when asked), or missing_image."""

    def __init__(self, attach: bool):
        self.attach = attach

    def process(self, element):
        _, grouped = element
        for sample in grouped["sample"]:
            parts = sorted(grouped["parts"], key=lambda p: p[0])
            missing = [image_id for _, image_id, data in parts if data is None]
            if missing or len(parts) != len(sample["image_ids"]):
                yield refused(sample_reject(sample, "join", (MISSING_IMAGE, f"image_id {missing[0] if missing else '?'}"
                                                                            " is in none of the run's images tables")))
            else:
                yield {**sample, "image": [data for _, _, data in parts]} if self.attach else sample


class JoinImages(beam.PTransform):
    """Samples -> (samples, ImageRecords they use, rejects at `join`): rows that carry an `image_id` (RL rows
    of a quarry run) find their image in the run's `DIR/images` tables, which grade writes again for the rows
    it keeps. `attach`: the bytes go into the sample too (rollout generation and decontam need them)."""

    def __init__(self, files: list[InputFile], attach: bool):
        super().__init__()
        self.files, self.attach = files, attach

    def expand(self, samples):
        # 0: one picture by id, 1: several (image_ids), 2: none or bytes in the row
        by_id = samples | "ById" >> beam.Partition(
            lambda s, _n: (1 if s.get("image_ids") else 0) if s.get("image_id") else 2, 3)
        images = samples.pipeline | "ReadImageTables" >> ReadFiles(self.files, _ReadImageRecords(),
                                                                    _ReadImageRecords.INVALID)
        keyed = (
            by_id[0] | "KeyByImageId" >> beam.Map(lambda s: (s["image_id"], s)),
            by_id[1] | "PartsByImageId" >> beam.FlatMap(
                lambda s: [(i, (_part_key(s), k)) for k, i in enumerate(s["image_ids"])]),
        ) | "AllKeyed" >> beam.Flatten()
        joined = (
            {"samples": keyed, "images": images.main}
            | "GroupByImage" >> beam.CoGroupByKey()
            | "Attach" >> beam.ParDo(_JoinImage(self.attach)).with_outputs(
                REJECTED, _JoinImage.IMAGES, _JoinImage.PARTS, main="samples")
        )
        assembled = (
            {"sample": by_id[1] | "KeyByRow" >> beam.Map(lambda s: (_part_key(s), s)),
             "parts": joined[_JoinImage.PARTS]}
            | "GroupPictures" >> beam.CoGroupByKey()
            | "Assemble" >> beam.ParDo(_AssembleImages(self.attach)).with_outputs(REJECTED, main="samples")
        )
        out = (joined.samples, assembled.samples, by_id[2]) | "AllSamples" >> beam.Flatten()
        rejected = (joined[REJECTED], assembled[REJECTED]) | "JoinRejects" >> beam.Flatten()
        return out, joined[_JoinImage.IMAGES], rejected


class Graded(NamedTuple):
    rows: Any  # PCollection[GradeRow]
    rejected: Any  # PCollection[Reject]


class GradePipeline(beam.PTransform):
    """(samples, rollouts) -> Graded(rows, rejected); writes join/grade stage counts and the summary."""

    def __init__(self, cfg: GradeConfig, output: str):
        super().__init__()
        self.cfg, self.output = cfg, output

    def expand(self, inputs):
        samples, rollouts = inputs
        cfg, output = self.cfg, self.output
        weights = cfg.grade.weights.model_dump()
        keyed = samples | "KeySamples" >> beam.Map(lambda s: (s["sample_id"], s))
        out = (
            {"samples": keyed, "rollouts": rollouts}
            | "JoinRollouts" >> beam.CoGroupByKey()
            | "Score" >> beam.ParDo(_Grade(cfg.grade, cfg.rule_verifiers(), cfg.judge_tasks(), cfg.judge)).with_outputs(
                REJECTED, _Grade.UNKNOWN, _Grade.JUDGED, main="rows")
        )
        if cfg.judge is not None:
            judged = out[_Grade.JUDGED]
            count_stage(output, "judge", judged, judged | "JudgeAnswered" >> beam.Filter(bool))
        unknown = out[_Grade.UNKNOWN] | "SumUnknown" >> beam.CombineGlobally(sum)
        sizes = run_sizes(rollouts, "RunSizes")
        total = sizes | "TotalRollouts" >> beam.CombineGlobally(sum)
        total | "WriteJoinIn" >> beam.Map(
            lambda n: write_stats(output, "rollouts_join.in", {"name": "rollouts_join.in", "count": n}))
        (
            unknown
            | "MatchedRollouts" >> beam.Map(lambda u, total: total - u, total=beam.pvalue.AsSingleton(total))
            | "WriteMatched" >> beam.Map(
                lambda n: write_stats(output, "rollouts_join.out", {"name": "rollouts_join.out", "count": n}))
        )
        count_stage(output, "grade", samples, out.rows)
        (
            out.rows
            | "TierKey" >> beam.Map(lambda r: (r.source, r.task, r.tier))
            | "CountTiers" >> beam.combiners.Count.PerElement()
            | "CollectTierCounts" >> beam.combiners.ToList()  # one entry per (source, task, tier): small
            | "WriteSummary" >> beam.Map(
                lambda counts, unk: write_stats(
                    output, SUMMARY_STATS,
                    {"name": "grade_summary", "count": sum(n for _, n in counts),
                     "unknown_rollouts": unk,
                     **tiers.summarize([(s, t, tr, n) for (s, t, tr), n in counts], weights)}),
                unk=beam.pvalue.AsSingleton(unknown))
        )
        return Graded(out.rows, out[REJECTED])


def read_summary(output: str) -> Optional[dict]:
    """The summary a run wrote under `DIR/_stats/` (None when it wrote none)."""
    return read_stats(output, SUMMARY_STATS)


# The reasons each stage of the grade DAG (dags/grade.py: SPEC.stages) can give its reject rows; `read` is the
# reader's.
STAGE_REASONS: dict[str, tuple[str, ...]] = {
    "decontam": (decontam_ops.CONTAMINATED_TEXT, decontam_ops.CONTAMINATED_IMAGE),
    "mc": mc_ops.REASONS,
    "join": (DUPLICATE_SAMPLE_ID, MISSING_IMAGE),
    "grade": (NO_VERIFIER, NO_ROLLOUTS),
    "write": (),
}
