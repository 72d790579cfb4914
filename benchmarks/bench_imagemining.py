"""imagemining throughput, KB loading and memory, next to a bare loop of the same operators.

    .venv/bin/python benchmarks/bench_imagemining.py [--entities 100000] [--facts-per-entity 10]
                                                      [--images 5000] [--workers 2] [--store memory|sqlite]

Builds (once, cached under benchmarks/_work) a synthetic knowledge base
(default 100k entities of 8 types and ~1M facts: functional relations, a
multi-valued one, literals, cycles through capitals, a few hubs) and image
rows that show one or two KB entities (with boxes) on the shipped demo photos,
a fifth of them three people in a row (where chains take a visual hop).
Then reports, in one run:

1. KB loading: seconds and resident memory of `load_kb` (one process);
2. QA rows/s of the DAG (DirectRunner multi_processing, N workers, in a
   subprocess, start-up and KB loading included) next to QA rows/s of a bare
   `multiprocessing.Pool(N)` running the same operators (parse, decode, link;
   the index of boxed pictures for visual hops; walk, question, filters, tags,
   near-duplicates; KB loaded once per worker) and writing the rows to one
   Parquet file, and the ratio;
3. peak resident memory of the DAG's process tree.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
from _measure import run_watched  # benchmarks/ is on sys.path when a script runs

WORK = Path(__file__).resolve().parent / "_work" / "imagemining"
PHOTOS = ("grace_hopper.jpg", "astronaut.jpg", "rocket.jpg", "coffee.jpg", "horse.jpg", "camera.jpg", "coins.jpg")

# type -> (share of entities, [(relation, object type or literal type, functional)])
SCHEMA = {
    "landmark": (0.30, [("located_in", "city", True), ("architect", "person", True), ("named_after", "person", True),
                        ("opened_in", "year", True), ("height", "quantity", True), ("part_of", "landmark", True),
                        ("award_received", "award", False), ("creator", "person", True), ("inception", "year", True),
                        ("significant_event", "event", True)]),
    "person": (0.30, [("place_of_birth", "city", True), ("place_of_death", "city", True),
                      ("employer", "organization", True), ("educated_at", "organization", True),
                      ("date_of_birth", "year", True), ("spouse", "person", True), ("member_of", "organization", False),
                      ("award_received", "award", False), ("country", "country", True), ("participant_in", "event", True)]),
    "city": (0.20, [("country", "country", True), ("located_in", "region", True), ("population", "quantity", True),
                    ("named_after", "person", True), ("inception", "year", True), ("headquarters", "organization", False),
                    ("part_of", "region", True), ("elevation", "quantity", True), ("continent", "continent", True),
                    ("significant_event", "event", True)]),
    "organization": (0.10, [("headquarters", "city", True), ("founded_by", "person", True),
                            ("inception", "year", True), ("country", "country", True), ("member_of", "organization", False),
                            ("named_after", "person", True), ("part_of", "organization", True),
                            ("award_received", "award", False), ("located_in", "city", True),
                            ("participant_in", "event", True)]),
    "region": (0.04, [("country", "country", True), ("capital", "city", True), ("population", "quantity", True)]),
    "event": (0.05, [("located_in", "city", True), ("inception", "year", True), ("participant_in", "event", True)]),
    "award": (0.008, [("founded_by", "person", True), ("inception", "year", True)]),
    "country": (0.002, [("capital", "city", True), ("continent", "continent", True),
                        ("official_language", "language", True)]),
}
FIXED = {"continent": 7, "language": 50}


def make_kb(path: Path, n_entities: int, facts_per_entity: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    ids: dict[str, list[str]] = {}
    with open(path, "w") as fh:
        for t, n in FIXED.items():
            ids[t] = [f"{t}{i}" for i in range(n)]
        for t, (share, _) in SCHEMA.items():
            ids[t] = [f"{t}{i}" for i in range(max(2, int(n_entities * share)))]
        for t, members in ids.items():
            for eid in members:
                fh.write(json.dumps({"id": eid, "name": f"{t.title()} {rng.randrange(10**9)} {eid[len(t):]}",
                                     "aliases": [f"{t[:3].upper()}-{eid[len(t):]}"], "type": t}) + "\n")
        # a few hubs: cities that hundreds of things are in
        hubs = ids["city"][:20]
        for t, (_, rels) in SCHEMA.items():
            rels = rels[:facts_per_entity]
            for eid in ids[t]:
                for rel, otype, functional in rels:
                    for k in range(1 if functional else rng.randint(1, 3)):
                        if otype in ("year", "quantity"):
                            fh.write(json.dumps({"subject": eid, "relation": rel, "value": rng.randint(1000, 2020),
                                                 "value_type": otype}) + "\n")
                        else:
                            pool = hubs if otype == "city" and rng.random() < 0.3 else ids[otype]
                            obj = pool[(rng.randrange(len(pool)) + k) % len(pool)]
                            if obj != eid:
                                fh.write(json.dumps({"subject": eid, "relation": rel, "object": obj}) + "\n")


def make_images(folder: Path, n: int, n_entities: int, seed: int = 1) -> Path:
    from importlib import resources

    rng = random.Random(seed)
    data = resources.files("quarry.dags") / "demo_data"
    for p in PHOTOS:
        shutil.copyfile(str(data / p), folder / p)
    landmarks = max(2, int(n_entities * SCHEMA["landmark"][0]))
    persons = max(2, int(n_entities * SCHEMA["person"][0]))
    path = folder / "images.jsonl"
    with open(path, "w") as fh:
        for i in range(n):
            if rng.random() < 0.2:  # a row of three people (a team photo): where visual hops can land and go on
                ents = [{"id": f"person{rng.randrange(persons)}", "box": [8 + 105 * k, 40, 108 + 105 * k, 230]}
                        for k in range(3)]  # within the narrowest photo (328 px)
            else:
                ents = [{"id": f"landmark{rng.randrange(landmarks)}",
                         "box": [10, 10, 10 + rng.randint(40, 300), 200]}]
                if rng.random() < 0.3:
                    ents.append({"id": f"person{rng.randrange(persons)}", "box": [200, 50, 300, 250]})
            fh.write(json.dumps({"id": i, "image": rng.choice(PHOTOS), "entities": ents, "source": "bench"}) + "\n")
    return path


def prepare(entities: int, facts_per_entity: int, images: int) -> tuple[Path, Path]:
    folder = WORK / f"kb{entities}-f{facts_per_entity}-im{images}-v3"  # v3: team photos for visual hops
    kb, rows = folder / "kb.jsonl", folder / "images.jsonl"
    if not (kb.exists() and rows.exists()):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        t0 = time.perf_counter()
        make_kb(kb, entities, facts_per_entity)
        make_images(folder, images, entities)
        print(f"  built input in {time.perf_counter() - t0:.1f}s", flush=True)
    return kb, rows


# --- the bare loop --------------------------------------------------------------------------

_STATE: dict = {}


def _init(kb_path: str) -> None:
    from quarry.pipelines.imagemining import Miner
    from quarry.schemas.imagemining import ImageMiningConfig

    cfg = ImageMiningConfig.model_validate({"kb": {"path": kb_path}})
    _STATE["cfg"] = cfg
    _STATE["miner"] = Miner(kb_path, None, "en", cfg.qa.min_hops, cfg.qa.check_ocr, cfg.link.min_chars)


def _bare_link(chunk: list[tuple[str, str, dict]]) -> list:
    """Parse, decode, link a chunk of rows: the Linked images (what the mining pass and the view index read)."""
    from quarry.operators.decode import decode_image
    from quarry.operators.ids import digest
    from quarry.pipelines.imagemining import ImageInput, ImageMeta, Linked, blank_boxes, link_image, parse_image_row
    from quarry.pipelines.read import RowRecord

    cfg, miner = _STATE["cfg"], _STATE["miner"]
    out = []
    for file, key, row in chunk:
        inp = parse_image_row(RowRecord(file, key, row), "bench", cfg.reader.max_image_bytes)
        if not isinstance(inp, ImageInput):
            continue
        decoded = decode_image(inp.image_bytes, cfg.decode)
        if not hasattr(decoded, "width"):
            continue
        meta = ImageMeta(inp, digest(inp.image_bytes), decoded.width, decoded.height,
                         blank_boxes(decoded.image, inp.entities) if inp.entities else ())
        meta = ImageMeta(replace(inp, image_bytes=b""), meta.image_id, meta.width, meta.height, meta.blank)
        out.extend(o for o in link_image(miner, meta, cfg) if isinstance(o, Linked))
    return out


def _bare_mine(job: tuple[str, list]) -> list[tuple[str, str, str, bytes]]:
    """Mine a chunk of linked images: (dedup key, id, question, packed row dict) of the kept questions, packed
    as the DAG packs them (100k images give ~1.9M rows to hold until near-duplicates are known). The view
    index is read from its pickle once per worker (the DAG's side input)."""
    import pickle

    from quarry.pipelines.imagemining import Mined, mine_linked
    from quarry.pipelines.write import pack_row

    views_path, chunk = job
    if _STATE.get("views_path") != views_path:
        with open(views_path, "rb") as fh:
            _STATE["views"], _STATE["views_path"] = pickle.load(fh), views_path
    views = _STATE["views"]
    cfg, miner = _STATE["cfg"], _STATE["miner"]
    views_of = (lambda eid: views.get(eid, ())) if cfg.qa.visual_hops else None
    return [(o.dedup_key(cfg.dedup.scope), o.row.sample_id, o.row.question, pack_row(o.row.model_dump()))
            for linked in chunk for o in mine_linked(miner, linked, cfg, views_of) if isinstance(o, Mined)]


def bare_loop(kb_path: Path, rows_path: Path, workers: int, out: Path) -> tuple[int, float, int]:
    """The same operators in a Pool: link every image (pass 1), index the boxed views, mine (pass 2), near-
    duplicates per answer, one Parquet file. Returns (rows, seconds, rows with a visual hop)."""
    import pickle

    import pyarrow as pa
    import pyarrow.parquet as pq

    from quarry.operators.imagemining.qa import near_duplicates
    from quarry.pipelines.imagemining import view_index
    from quarry.pipelines.write import unpack_row
    from quarry.schemas.arrow import arrow_schema
    from quarry.schemas.imagemining import ImageMiningConfig, QARow

    t0 = time.perf_counter()
    per_entity = ImageMiningConfig.model_validate({"kb": {"path": str(kb_path)}}).qa.views_per_entity
    lines = [(str(rows_path), f"line:{i}", json.loads(s)) for i, s in enumerate(rows_path.read_text().splitlines(), 1)]
    chunks = [lines[i:i + 64] for i in range(0, len(lines), 64)]
    groups: dict[str, list] = {}
    out.mkdir(parents=True, exist_ok=True)
    views_path = out / "views.pkl"
    with mp.get_context("spawn").Pool(workers, initializer=_init, initargs=(str(kb_path),)) as pool:
        linked = [lk for result in pool.imap(_bare_link, chunks) for lk in result]
        index = view_index((v for lk in linked for v in [lk.view()] if v is not None), per_entity)
        with open(views_path, "wb") as fh:
            pickle.dump(index, fh, protocol=pickle.HIGHEST_PROTOCOL)
        jobs = [(str(views_path), linked[i:i + 64]) for i in range(0, len(linked), 64)]
        del linked
        for result in pool.imap_unordered(_bare_mine, jobs):
            for key, sid, question, row in result:
                groups.setdefault(key, []).append((sid, question, row))
    kept = visual = 0
    with pq.ParquetWriter(out / "bare.parquet", arrow_schema(QARow)) as writer:
        batch: list[dict] = []
        for i, items in enumerate(groups.values(), 1):
            dropped = near_duplicates([(s, q) for s, q, _ in items], 90.0)
            batch.extend(unpack_row(r) for s, _, r in items if s not in dropped)
            if len(batch) >= 5000 or i == len(groups):  # written in row groups, not one table of every row
                kept, visual = kept + len(batch), visual + sum(r["visual_hops"] > 1 for r in batch)
                writer.write_table(pa.Table.from_pylist(batch, schema=arrow_schema(QARow)))
                batch = []
    return kept, time.perf_counter() - t0, visual


# --- the DAG in a subprocess ----------------------------------------------------------------

def child(kb: str, rows: str, out: str, workers: int, store: str, spill: str) -> None:
    from quarry.dags import imagemining
    from quarry.dags.runner import resolve_config, run_dag

    cfg = resolve_config(imagemining.SPEC, None, [f"kb.path={kb}", f"kb.store={store}", f"shards.spill={spill}"],
                         "bench")
    beam_args = ([f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"] if workers > 1 else [])
    m = run_dag(imagemining.SPEC, [rows], out, cfg, overwrite=True, beam_args=beam_args)
    print("MANIFEST " + json.dumps({"kept": m.kept, "rejected": m.rejected, "stages": {
        k: v.model_dump() for k, v in m.stages.items()}, "kb": m.extra.get("kb")}))


def run_dag(kb: Path, rows: Path, out: Path, workers: int, store: str, spill: bool) -> tuple[float, int, dict]:
    cmd = [sys.executable, __file__, "--child", str(kb), str(rows), str(out), str(workers), store, str(spill).lower()]
    elapsed, peak, returncode, output, *_ = run_watched(cmd)
    line = next((ln for ln in output.splitlines() if ln.startswith("MANIFEST ")), None)
    if returncode != 0 or line is None:
        raise SystemExit(f"DAG failed:\n{output[-4000:]}")
    return elapsed, peak, json.loads(line[len("MANIFEST "):])


def main() -> None:
    if len(sys.argv) == 8 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6], sys.argv[7])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--facts-per-entity", type=int, default=10, help="relations per entity type at most (default 10)")
    ap.add_argument("--images", type=int, default=5_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store", choices=("memory", "sqlite"), default="memory",
                    help="kb.store of the DAG run; sqlite also times building the store (the bare loop stays in memory)")
    ap.add_argument("--no-spill", action="store_true",
                    help="shards.spill=false: rows wait for the writer in the DirectRunner's memory, as before spilling")
    args = ap.parse_args()

    print(f"input: {args.entities} entities, <= {args.facts_per_entity} relations each, {args.images} image rows "
          f"(cached under {WORK})", flush=True)
    kb, rows = prepare(args.entities, args.facts_per_entity, args.images)

    from quarry.operators.imagemining.kb import load_kb

    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    loaded = load_kb(str(kb))
    load_s = time.perf_counter() - t0
    stats = loaded.stats()
    print(f"\nKB load: {stats['entities']} entities, {stats['facts']} facts ({stats['multi_valued_pairs']} multi-valued "
          f"pairs) in {load_s:.1f}s, +{(proc.memory_info().rss - rss0) / 2**20:.0f} MiB resident", flush=True)
    t0 = time.perf_counter()
    loaded.linker  # noqa: B018 - builds the Aho-Corasick automata
    print(f"entity linker (Aho-Corasick over names and aliases): built in {time.perf_counter() - t0:.1f}s, "
          f"{proc.memory_info().rss / 2**20:.0f} MiB resident in all", flush=True)
    del loaded
    if args.store == "sqlite":
        from quarry.operators.imagemining.kb_store import ensure_kb_store
        from quarry.operators.imagemining.qa import load_templates

        store = Path(str(kb) + ".sqlite")
        store.unlink(missing_ok=True)
        t0 = time.perf_counter()
        ensure_kb_store(str(kb), str(store), load_templates().relation_aliases, log=lambda _m: None)
        print(f"SQLite KB store (kb.store=sqlite): built in {time.perf_counter() - t0:.1f}s, "
              f"{store.stat().st_size / 2**20:.0f} MiB on disk", flush=True)

    n_bare, bare_s, n_visual = bare_loop(kb, rows, args.workers, WORK / "bare-out")
    dag_s, peak, manifest = run_dag(kb, rows, WORK / "dag-out", args.workers, args.store, not args.no_spill)
    n_dag = manifest["kept"]
    print(f"\nthroughput ({args.images} image rows, whole runs: start-up and KB loading per worker included), "
          f"{args.workers} processes")
    print(f"  bare Pool({args.workers}) same operators + Parquet: {n_bare} QA rows in {bare_s:.1f}s = "
          f"{n_bare / bare_s:.0f} rows/s ({args.images / bare_s:.0f} images/s)")
    print(f"  DAG multi_processing x{args.workers}, kb.store={args.store}, shards.spill={not args.no_spill}: {n_dag} QA rows in {dag_s:.1f}s = "
          f"{n_dag / dag_s:.0f} rows/s ({args.images / dag_s:.0f} images/s)")
    print(f"  ratio DAG / bare: {bare_s / dag_s:.2f}")
    print(f"  rows: DAG {n_dag}, bare {n_bare}: " + ("the same" if n_dag == n_bare else "DIFFERENT")
          + f"; {n_visual} of the bare loop's rows have a visual hop in the middle (two pictures)")
    print("  DAG stages: " + ", ".join(f"{k} {v['inputs']}->{v['outputs']}" for k, v in sorted(manifest['stages'].items())))
    print(f"  DAG rejects: {json.dumps(manifest['rejected'])}")
    kb_stats = manifest.get("kb") or {}
    print(f"  (KB load inside one DAG worker: {kb_stats.get('load_s')}s; every worker process loads it once)")
    print(f"peak RSS of the DAG's process tree: {peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
