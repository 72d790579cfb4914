"""`quarry selfcheck OUT`: do a run's RL rows pass their own verifiers?

For every row of a run directory that names a verifier (the RL contract,
`schemas/rl.py`), two rollouts are written: the row's own answer ("gold", in
the response format rollouts use) and a perturbed answer of the same form
(`operators/grade/contract.py: perturbed_answer`). Then the real `grade` DAG
grades the run with those rollouts at `grade.correct_at=1.0`, so a rollout is
correct only at reward 1. The report gives, per task, the share of rows whose
gold answer scores 1 (must be 100%) and the share whose perturbed answer
scores 1 (must be 0%), plus every row grade rejected.

Rows without a verifier (svg_to_image generation pairs) are counted as not
RL tasks and get no rollouts. Rollout files stream from the shards (a
Parquet batch at a time); `--limit N` checks the first N RL rows only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections import Counter
from typing import Iterator, Optional

import pyarrow.parquet as pq

GOLD, PERTURBED = "gold", "perturbed"
REPORT_FILE = "selfcheck.json"
_COLUMNS = ("sample_id", "task", "answer", "answer_aliases", "verifier")


@dataclasses.dataclass
class TaskCheck:
    rows: int = 0
    gold_right: int = 0
    perturbed_right: int = 0

    @property
    def gold_share(self) -> float:
        return self.gold_right / self.rows if self.rows else 0.0

    @property
    def perturbed_share(self) -> float:
        return self.perturbed_right / self.rows if self.rows else 0.0


@dataclasses.dataclass
class SelfCheck:
    run: str
    tasks: dict[str, TaskCheck]
    not_rl: int  # rows without a verifier
    rejected: dict[str, int]  # "stage/reason" -> rows grade rejected

    @property
    def ok(self) -> bool:
        return (bool(self.tasks) and not self.rejected
                and all(t.gold_right == t.rows and t.perturbed_right == 0 for t in self.tasks.values()))

    def to_json(self) -> dict:
        return {"run": self.run, "ok": self.ok, "not_rl_rows": self.not_rl, "grade_rejected": self.rejected,
                "tasks": {name: {"rows": t.rows, "gold_reward_1": t.gold_right, "gold_share": round(t.gold_share, 6),
                                 "perturbed_reward_1": t.perturbed_right,
                                 "perturbed_share": round(t.perturbed_share, 6)}
                          for name, t in sorted(self.tasks.items())}}

    def table(self) -> str:
        lines = [f"{'task':<22} {'rows':>7} {'gold=1':>8} {'perturbed=1':>12}"]
        for name, t in sorted(self.tasks.items()):
            lines.append(f"{name:<22} {t.rows:>7} {t.gold_share:>8.1%} {t.perturbed_share:>12.1%}")
        if self.not_rl:
            lines.append(f"({self.not_rl} rows carry no verifier: not RL tasks, not checked)")
        for key, n in sorted(self.rejected.items()):
            lines.append(f"grade rejected {n} row(s): {key}")
        lines.append("selfcheck: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)


def _data_files(run: str) -> list[str]:
    out = []
    for root, _dirs, files in os.walk(os.path.join(run, "data")):
        out += [os.path.join(root, f) for f in files if f.endswith(".parquet")]
    return sorted(out)


def _rows(run: str) -> Iterator[dict]:
    for path in _data_files(run):
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        for batch in pf.iter_batches(batch_size=1024, columns=[c for c in _COLUMNS if c in names]):
            yield from batch.to_pylist()


def write_rollouts(run: str, path: str, limit: Optional[int] = None) -> tuple[int, int]:
    """Gold and perturbed rollouts of the run's RL rows to JSONL `path`; (RL rows written, rows without a
    verifier, RL rows past `limit`)."""
    from quarry.operators.grade import contract

    rl = not_rl = skipped = 0
    with open(path, "w", encoding="utf-8") as out:
        for row in _rows(run):
            spec = contract.parse_spec(row.get("verifier"))
            if spec is None:
                not_rl += 1
                continue
            if isinstance(spec, str):  # an invalid spec: grade rejects the row, and the report shows it
                continue
            if limit is not None and rl >= limit:
                skipped += 1
                continue
            rl += 1
            aliases = row.get("answer_aliases") or []
            answer = row["answer"]
            for model, response in ((GOLD, contract.gold_response(answer)),
                                    (PERTURBED, contract.gold_response(contract.perturbed_answer(spec, answer,
                                                                                                   aliases)))):
                out.write(json.dumps({"sample_id": row["sample_id"], "model": model, "response": response},
                                     ensure_ascii=False) + "\n")
    return rl, not_rl, skipped


def selfcheck(run: str, work: Optional[str] = None, limit: Optional[int] = None,
              beam_args: Optional[list[str]] = None) -> SelfCheck:
    """Grade `run` with its own answers and with perturbed ones; the report is also written to WORK/selfcheck.json."""
    from quarry.dags import grade
    from quarry.dags.runner import resolve_config, run_dag

    if not os.path.exists(os.path.join(run, "manifest.json")):
        raise FileNotFoundError(f"{run}: not a quarry run directory (no manifest.json)")
    work = work or tempfile.mkdtemp(prefix="quarry-selfcheck-")
    os.makedirs(work, exist_ok=True)
    rollouts = os.path.join(work, "rollouts.jsonl")
    n_rl, not_rl, skipped = write_rollouts(run, rollouts, limit)
    graded = os.path.join(work, "graded")
    report = SelfCheck(run, {}, not_rl, {})
    if n_rl:
        cfg = resolve_config(grade.SPEC, None, [f"rollouts={rollouts}", "grade.correct_at=1.0"], None)
        manifest = run_dag(grade.SPEC, [run], graded, cfg, overwrite=True, beam_args=beam_args or [])
        # Expected rejects: rows without a verifier (no_verifier) and rows past --limit (no_rollouts).
        expected = Counter({"grade/no_verifier": not_rl, "grade/no_rollouts": skipped})
        for stage, by_reason in manifest.rejected.items():
            for reason, n in by_reason.items():
                left = n - expected[f"{stage}/{reason}"]
                if left > 0:
                    report.rejected[f"{stage}/{reason}"] = left
        _tally(graded, report)
    with open(os.path.join(work, REPORT_FILE), "w", encoding="utf-8") as fh:
        json.dump(report.to_json(), fh, indent=2)
    return report


def _tally(graded: str, report: SelfCheck) -> None:
    for row in _graded_rows(graded):
        t = report.tasks.setdefault(row["task"], TaskCheck())
        t.rows += 1
        by_model = {m["model"]: m for m in row["models"]}
        t.gold_right += by_model.get(GOLD, {}).get("pass_rate", 0.0) == 1.0
        t.perturbed_right += by_model.get(PERTURBED, {}).get("pass_rate", 0.0) == 1.0


def _graded_rows(graded: str) -> Iterator[dict]:
    for path in _data_files(graded):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=["task", "models"]):
            yield from batch.to_pylist()
