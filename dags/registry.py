"""The DAGs `quarry` knows, by name (the CLI's lookup table)."""

from __future__ import annotations

from quarry.dags import caption, decontam, documents, grade, gui, imagemining, interleaved, ocr_search, ocr_synth, svg
from quarry.dags.runner import DagSpec

DAGS: dict[str, DagSpec] = {
    spec.name: spec
    for spec in (caption.SPEC, gui.SPEC, ocr_search.SPEC, svg.SPEC, imagemining.SPEC, interleaved.SPEC,
                 decontam.SPEC, grade.SPEC, documents.SPEC, ocr_synth.SPEC)
}
