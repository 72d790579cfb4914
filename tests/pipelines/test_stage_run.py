"""pipelines/stage.py's `run_stage` and `refused` in a TestPipeline: kept, rejected and extra outputs, stage counts."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from quarry.operators.base import Rejection
from quarry.pipelines.stage import MAX_DETAIL, refused, reject_row, run_stage
from quarry.pipelines.stats import read_counts
from quarry.schemas.common import Origin


class _Odd(beam.DoFn):
    """Keeps even numbers, tags multiples of three, refuses odd numbers with a long detail."""

    def process(self, n: int):
        if n % 3 == 0:
            yield beam.pvalue.TaggedOutput("threes", n)
        if n % 2:
            yield refused(reject_row(f"id-{n}", "src", Origin(file="f", key=str(n)), "parity",
                                     Rejection("odd", "x" * (MAX_DETAIL + 10))))
            return
        yield n


def test_run_stage_splits_kept_rejected_and_tags_and_counts_the_stage(tmp_path):
    with TestPipeline() as p:
        out = run_stage(p | beam.Create(range(7)), "Parity", _Odd(), str(tmp_path), "parity", tags=("threes",))
        assert_that(out.kept, equal_to([0, 2, 4, 6]), label="Kept")
        assert_that(out["threes"], equal_to([0, 3, 6]), label="Threes")
        assert_that(out.rejected | beam.Map(lambda r: (r.sample_id, r.stage, r.reason, len(r.detail), r.origin.key)),
                    equal_to([(f"id-{n}", "parity", "odd", MAX_DETAIL, str(n)) for n in (1, 3, 5)]), label="Rejected")
    assert read_counts(str(tmp_path)) == {"parity.in": 7, "parity.out": 4}


def test_run_stage_without_an_output_dir_counts_nothing(tmp_path):
    with TestPipeline() as p:
        out = run_stage(p | beam.Create([1, 2]), "Parity", _Odd(), None, "parity", tags=("threes",))
        assert_that(out.kept, equal_to([2]), label="Kept")
        assert_that(out.rejected | beam.Map(lambda r: r.reason), equal_to(["odd"]), label="Rejected")
    assert not (tmp_path / "_stats").exists()
