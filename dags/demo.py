"""`quarry demo`: run every DAG on sample data shipped with quarry, offline.

Each DAG's demo input is made by its module in `dags/demos/` (`build(folder)
-> DemoInput`); `DEMOS` lists them in the order the demo runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from quarry.dags.demos import DemoInput, caption, decontam, documents, grade, gui, imagemining, interleaved, ocr_search, ocr_synth, svg

DEMOS: dict[str, Callable[[Path], DemoInput]] = {
    "caption": caption.build,
    "grade": grade.build,
    "gui": gui.build,
    "ocr_search": ocr_search.build,
    "ocr_synth": ocr_synth.build,
    "svg": svg.build,
    "imagemining": imagemining.build,
    "interleaved": interleaved.build,
    "decontam": decontam.build,
    "documents": documents.build,
}

TINY_BANNER = "\n".join([
    "!" * 78,
    "! The demo scores with quarry-tiny, a random-weight CLIP: its clip_score values are",
    "! meaningless. Point clip.model / clip.pretrained at real weights for real data.",
    "!" * 78,
])


def run_demo(output: str, overwrite: bool = False) -> int:
    """Run every DAG of `DEMOS` on its demo input under `output`; 0 when every manifest adds up."""
    from quarry.dags.inspect import summary
    from quarry.dags.registry import DAGS
    from quarry.dags.runner import resolve_config, run_dag

    out = Path(output)
    ok = True
    for name, build in DEMOS.items():
        demo = build(out / "inputs" / name)
        cfg = resolve_config(DAGS[name], None, demo.sets, demo.source or f"demo-{name}")
        print(f"\nquarry demo: {name} DAG on {', '.join(demo.patterns)}", flush=True)
        manifest = run_dag(DAGS[name], demo.patterns, str(out / name), cfg, overwrite=overwrite)
        print(summary(str(out / name)))
        if name == "caption":
            print(f"\n{TINY_BANNER}\n\nshards: {out / name / 'data'}   manifest: {out / name / 'manifest.json'}")
        ok = ok and manifest.balanced is not False
    print(f"\ntry: quarry inspect {out / 'caption'} --sql \"SELECT tier, count(*) FROM shards GROUP BY tier\"")
    return 0 if ok else 1
