"""What every stage shares: a verdict becomes a reject row here, and a stage's counts are written here.

- `reject_row` is the one place a `Rejection` (an operator's verdict) becomes a
  `Reject` row; `to_reject` does it for anything that carries `sample_id`,
  `source` and `origin` (every record and candidate type of the families).
- `StageOutputs(kept, rejected)` is what a stage or a family transform returns.
- `count_stage` writes `<stage>.in` / `<stage>.out` to `DIR/_stats` (the
  manifest's `stages`); `count` writes one count, and does nothing without an
  output directory (transforms used alone, in tests).

Reason codes are constants next to the operator that emits them, listed in
that module's `REASONS` tuple; `quarry list` shows them per stage.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

from apache_beam import ParDo
from apache_beam.pvalue import TaggedOutput

from quarry.operators.base import Rejection
from quarry.pipelines.stats import CountTo
from quarry.schemas.common import Origin, Reject

MAX_DETAIL = 500  # characters of a reject's detail: enough to debug, bounded for hostile inputs


class StageOutputs(NamedTuple):
    kept: Any  # PCollection of the stage's records
    rejected: Any  # PCollection[Reject]


def reject_row(sample_id: str, source: str, origin: Origin, stage: str,
               verdict: Union[Rejection, tuple[str, str]]) -> Reject:
    """The reject row for one refused sample (a `Rejection`, or a `(reason, detail)` pair)."""
    reason, detail = (verdict.reason, verdict.detail) if isinstance(verdict, Rejection) else verdict
    return Reject(sample_id=sample_id, source=source, stage=stage, reason=reason, detail=detail[:MAX_DETAIL],
                  origin=origin)


def to_reject(item: Any, stage: str, verdict: Union[Rejection, tuple[str, str]]) -> Reject:
    """`reject_row` for a record that carries `sample_id`, `source` and `origin`."""
    return reject_row(item.sample_id, item.source, item.origin, stage, verdict)


def count(pcoll, output_dir: Optional[str], name: str, label: Optional[str] = None) -> None:
    """Count `pcoll` into `DIR/_stats/<name>.json`; nothing without an output directory."""
    if output_dir:
        pcoll | (label or f"Count[{name}]") >> CountTo(output_dir, name)


def count_stage(output_dir: Optional[str], stage: str, inputs, outputs) -> None:
    """`<stage>.in` and `<stage>.out`: the manifest's `stages[stage]`."""
    count(inputs, output_dir, f"{stage}.in")
    count(outputs, output_dir, f"{stage}.out")


# --- a stage as one ParDo: kept and rejected outputs, counts ---------------------------------------

REJECTED = "rejected"  # the output tag of a stage's reject rows


def refused(row: Reject) -> TaggedOutput:
    """What a stage's DoFn yields for an input it refuses: the reject row, on the `REJECTED` output."""
    return TaggedOutput(REJECTED, row)


def run_stage(inputs, label: str, fn, output_dir: Optional[str] = None, stage: Optional[str] = None,
              tags: tuple[str, ...] = ()):
    """`inputs | label >> ParDo(fn)`: what `fn` yields through `refused` on `.rejected`, the rest on
    `.kept`, and each of `tags` on its own output; with `stage`, `<stage>.in` counts `inputs` and
    `<stage>.out` the kept."""
    out = inputs | label >> ParDo(fn).with_outputs(REJECTED, *tags, main="kept")
    if stage is not None:
        count_stage(output_dir, stage, inputs, out.kept)
    return out
