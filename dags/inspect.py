"""`quarry inspect DIR`: DuckDB over a run's shards, rejects and manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import duckdb


def connect(run_dir: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with views `shards`, `rejects`, `images` and `contamination` (those that exist)."""
    con = duckdb.connect()
    root = Path(run_dir)
    tables = {
        "shards": (root / "data", "read_parquet('{}', hive_partitioning=true, union_by_name=true)"),
        "rejects": (root / "rejects", "read_parquet('{}', union_by_name=true)"),
        "images": (root / "images", "read_parquet('{}', union_by_name=true)"),
        "contamination": (root / "contamination", "read_parquet('{}', union_by_name=true)"),
    }
    for name, (folder, reader) in tables.items():
        if any(folder.glob("**/*.parquet")):
            glob = str(folder / "**" / "*.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM {reader.format(glob)}")
    return con


def _views(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def _text_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    cols = con.execute("DESCRIBE shards").fetchall()
    skip = {"sample_id", "source", "tier", "task"}
    text = [c[0] for c in cols if c[1] == "VARCHAR" and c[0] not in skip]
    preferred = [c for c in ("caption", "question", "answer", "text", "svg") if c in text]
    return preferred + [c for c in text if c not in preferred]


def summary(run_dir: str, samples: int = 3) -> str:
    """The text `quarry inspect` prints: manifest totals, rows by source x tier x task, rejects, samples."""
    root = Path(run_dir)
    if not root.exists():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    con = connect(run_dir)
    views = _views(con)
    parts: list[str] = []
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        m = json.loads(manifest_path.read_text())
        balance = "" if m.get("balanced") is None else f"  (inputs == kept + rejected: {m['balanced']})"
        parts.append(f"run {m['run_id']}  dag={m['dag']}  runner={m['runner']}  wall={m['wall_time_s']}s")
        parts.append(f"inputs={m['inputs']}  kept={m['kept']}  rejected={m['rejected_total']}{balance}")
        parts.extend(f"NOTE: {n}" for n in m.get("notes", []))
    if "shards" in views:
        present = {c[0] for c in con.execute("DESCRIBE shards").fetchall()}
        # Rows checked by `decontam` keep their own columns: not every table has task (or sample_id).
        task = ", task" if "task" in present else ""
        parts.append(f"\nrows by source x tier{' x task' if task else ''}")
        parts.append(str(con.sql(
            f"SELECT source, tier{task}, count(*) AS rows FROM shards GROUP BY source, tier{task} "
            f"ORDER BY source, list_position(['very_easy','easy','medium','hard','very_hard'], tier){task}")))
        cols = ", ".join([c for c in ("sample_id", "source", "tier", "task") if c in present] + [
            f"left({c}, 60) AS {c}" for c in _text_columns(con)[:2]])
        order = "sample_id" if "sample_id" in present else "source, tier"
        parts.append(f"\n{samples} sample rows")
        parts.append(str(con.sql(f"SELECT {cols} FROM shards ORDER BY {order} LIMIT {int(samples)}")))
    else:
        parts.append("\nno shards in data/")
    if "rejects" in views:
        parts.append("\nrejects by stage and reason")
        parts.append(str(con.sql(
            "SELECT stage, reason, count(*) AS rows, any_value(detail) AS example_detail "
            "FROM rejects GROUP BY ALL ORDER BY rows DESC, stage, reason")))
    if "contamination" in views:
        parts.append("\ncontamination matches by benchmark x source (DIR/contamination)")
        parts.append(str(con.sql(
            "SELECT benchmark, source, count(*) AS matches, count(DISTINCT sample_id) AS rows, "
            "count(*) FILTER (WHERE reason = 'contaminated_text') AS text, "
            "count(*) FILTER (WHERE reason = 'contaminated_image') AS image, any_value(action) AS action "
            "FROM contamination GROUP BY ALL ORDER BY matches DESC, benchmark, source")))
    elif manifest_path.exists() and "contamination" in json.loads(manifest_path.read_text()).get("extra", {}):
        parts.append("\ncontamination: no matches")
    return "\n".join(parts)


def run_sql(run_dir: str, query: str, limit: Optional[int] = 100) -> str:
    con = connect(run_dir)
    rel = con.sql(query)
    if rel is None:  # a statement without a result
        return "ok"
    return str(rel.limit(limit) if limit else rel)


# What two runs must share to be the same run: every Parquet file's bytes, and the manifest's counts.
_COUNT_KEYS = ("inputs", "kept", "rejected", "rows_by_partition")


def fingerprint(run_dir: str) -> dict:
    """{relative path: sha256} of every Parquet file of a run (data, rejects, images, contamination), plus
    `manifest:<key>` entries for its counts (inputs, kept, rejected, rows per partition, stage counts).

    Two runs of one DAG on the same inputs (same input paths: rows carry them) must have equal fingerprints,
    whatever the runner, the number of workers and the rerun; run ids and timings are not part of it.
    """
    import hashlib

    root = Path(run_dir)
    out: dict = {}
    for f in sorted(root.glob("**/*.parquet")):
        rel = f.relative_to(root)
        if rel.parts[0] in ("data", "rejects", "images", "contamination"):
            out[str(rel)] = hashlib.sha256(f.read_bytes()).hexdigest()
    manifest = json.loads((root / "manifest.json").read_text())
    for key in _COUNT_KEYS:
        out[f"manifest:{key}"] = json.dumps(manifest.get(key), sort_keys=True)
    out["manifest:stages"] = json.dumps({name: {k: v for k, v in s.items() if k in ("inputs", "outputs")}
                                         for name, s in (manifest.get("stages") or {}).items()}, sort_keys=True)
    return out


def differences(a: dict, b: dict) -> list[str]:
    """The keys two fingerprints disagree on (a file only one has, or other bytes or counts)."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
