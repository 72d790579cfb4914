"""quarry.pipelines.balance.BalanceConcepts in a TestPipeline."""

from __future__ import annotations

import random
from collections import Counter
from operator import itemgetter
from types import SimpleNamespace

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from quarry.operators.concepts import ConceptMatcher, keep_pair
from quarry.pipelines.balance import BalanceConcepts, BalancedPair
from quarry.schemas.caption import BalanceConfig

T = 50
VOCAB = ["dog", "axolotl", "quokka", "hot dog"]


def _pairs() -> list[tuple[str, str]]:
    """(sample_id, caption): a head concept 502 times, two tail concepts, 4 unmatched."""
    pairs = [(f"dog-{i:03d}", f"a dog in the park, photo {i}") for i in range(500)]
    pairs += [(f"axo-{i}", f"an axolotl in a tank {i}") for i in range(3)]
    pairs += [(f"mix-{i}", f"a dog looks at an axolotl {i}") for i in range(2)]
    pairs += [(f"quo-{i}", f"Quokka? no: a quokka {i}") for i in range(2)]
    pairs += [(f"none-{i}", f"an empty room {i}") for i in range(4)]
    return pairs


def _expected(pairs, t=T, keep_unmatched=False, enabled=True):
    """The same decisions computed in plain Python: (kept rows, rejected (id, reason), counts)."""
    matcher = ConceptMatcher(VOCAB)
    matched = {sid: tuple(matcher.match(cap)) for sid, cap in pairs}
    counts = Counter(e for es in matched.values() for e in es)
    kept, rejected = [], []
    for sid, _ in pairs:
        es = matched[sid]
        if enabled and not es and not keep_unmatched:
            rejected.append((sid, "no_concept_match"))
        elif enabled and es and not keep_pair(sid, es, counts, t):
            rejected.append((sid, "concept_downsampled"))
        else:
            rarest = min((counts[e] for e in es), default=None)
            kept.append((sid, es, rarest))
    return kept, rejected, dict(counts)


def _summarise(b: BalancedPair):
    return (b.element[0], b.concepts, b.rarest_count, b.tier)


def _run(pairs, cfg, *, shuffle_seed=None):
    """Run the transform; assert kept/rejected/counts against the pure-Python computation."""
    kept, rejected, counts = _expected(pairs, cfg.t, cfg.keep_unmatched, cfg.enabled)
    tier = {
        "dog": "very_easy",  # 502 >= 50
        "axolotl": "easy",  # 5 >= 50/10
        "quokka": "medium",  # 2 >= 50/100
        None: "medium",  # kept unmatched
    }
    by_rarest = {counts[e]: e for e in counts}
    kept_rows = [(sid, es, c, tier[by_rarest.get(c)]) for sid, es, c in kept]
    elements = list(pairs)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(elements)
    with test_pipeline.TestPipeline() as p:
        out = (
            p
            | beam.Create(elements, reshuffle=False)
            | "Balance" >> BalanceConcepts(cfg, VOCAB, caption_fn=itemgetter(1), id_fn=itemgetter(0))
        )
        assert_that(out.kept | "SummariseKept" >> beam.Map(_summarise), equal_to(kept_rows), label="Kept")
        assert_that(
            out.rejected | "SummariseRejected" >> beam.MapTuple(lambda el, rej: (el[0], rej.reason)),
            equal_to(rejected),
            label="Rejected",
        )
        assert_that(out.counts, equal_to(list(counts.items())), label="Counts")
    return kept, rejected


def test_head_capped_tail_kept_unmatched_rejected():
    pairs = _pairs()
    kept, rejected = _run(pairs, BalanceConfig(t=T))
    kept_ids = {sid for sid, _, _ in kept}
    head_kept = sum(sid.startswith("dog-") for sid in kept_ids)
    assert 30 <= head_kept <= 75  # binomial(500, 50/502): mean ~50
    assert {f"axo-{i}" for i in range(3)} | {"mix-0", "mix-1", "quo-0", "quo-1"} <= kept_ids  # tail kept whole
    assert not any(sid.startswith("none-") for sid in kept_ids)
    assert len(kept) + len(rejected) == len(pairs)


def test_rerun_in_another_order_keeps_the_same_ids():
    # `_run` asserts the pipeline's output equals the pure-Python decisions, which
    # depend only on ids and captions; so a rerun on shuffled input keeps the same ids.
    pairs = _pairs()
    expected, _, _ = _expected(pairs)
    kept, _ = _run(pairs, BalanceConfig(t=T), shuffle_seed=7)
    assert sorted(kept) == sorted(expected)


def test_keep_unmatched():
    kept, rejected = _run(_pairs(), BalanceConfig(t=T, keep_unmatched=True))
    assert {f"none-{i}" for i in range(4)} <= {sid for sid, _, _ in kept}
    assert {reason for _, reason in rejected} == {"concept_downsampled"}


def test_disabled_keeps_everything_but_still_tiers():
    pairs = _pairs()
    kept, rejected = _run(pairs, BalanceConfig(t=T, enabled=False))
    assert len(kept) == len(pairs) and rejected == []


def test_default_accessors_vocabulary_file_and_fold_case(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("# test\nCat\nice cream\n", encoding="utf-8")
    cfg = BalanceConfig(t=1, vocabulary=str(vocab), fold_case=True)
    elements = [
        SimpleNamespace(sample_id="a", caption="A cat eating ice cream."),
        SimpleNamespace(sample_id="b", caption="CAT"),
        SimpleNamespace(sample_id="c", caption="a dog"),
    ]
    counts = {"Cat": 2, "ice cream": 1}
    # `a` is kept by `ice cream` (count 1 = t); `b` by the seeded draw for `Cat` (p = 1/2)
    kept = [("a", ("Cat", "ice cream"), 1, "very_easy")]
    if keep_pair("b", ["Cat"], counts, 1):
        kept.append(("b", ("Cat",), 2, "very_easy"))
        rejected = [("c", "no_concept_match")]
    else:
        rejected = [("b", "concept_downsampled"), ("c", "no_concept_match")]
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(elements) | BalanceConcepts(cfg)
        assert_that(
            out.kept | beam.Map(lambda b: (b.element.sample_id, b.concepts, b.rarest_count, b.tier)),
            equal_to(kept),
            label="Kept",
        )
        assert_that(
            out.rejected | beam.MapTuple(lambda e, r: (e.sample_id, r.reason)), equal_to(rejected), label="Rejected"
        )
        assert_that(out.counts, equal_to(list(counts.items())), label="Counts")


def test_bad_vocabulary_fails_at_construction(tmp_path):
    from quarry.operators.concepts import VocabularyError

    with pytest.raises(VocabularyError):
        BalanceConcepts(BalanceConfig(vocabulary=str(tmp_path / "missing.txt")))
    with pytest.raises(ValueError):
        BalanceConcepts(BalanceConfig(), [])
