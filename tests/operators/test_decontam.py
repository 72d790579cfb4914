"""operators/decontam: normalisation, tokenising, benchmark files, the index and its lookups."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from quarry.operators.base import Rejection
from quarry.operators.decontam import (
    IMAGE_EXACT,
    IMAGE_PHASH,
    TEXT_EXACT,
    TEXT_NGRAM,
    BenchFile,
    BenchItem,
    BenchmarkError,
    Columns,
    DecontamIndex,
    ImageKey,
    IndexPart,
    IndexSettings,
    benchmark_name,
    check_row,
    item_from_row,
    normalize_text,
    read_benchmark_rows,
    resolve_columns,
    tokenize,
)
from quarry.operators.inputs.tables import table_columns as file_columns
from quarry.schemas.config import BenchColumns

Q1 = ("A rectangular garden is 12 meters long and 5 meters wide. A path of uniform width surrounds it, "
      "and the total area of garden and path is 120 square meters. What is the width of the path?")
Q2 = "Based on the chart, which country had the largest increase in renewable energy output between 2010 and 2020?"
Q3_ZH = "如图所示，在三角形ABC中，角A等于六十度，边AB等于边AC，求角B的度数是多少"
Q4_SHORT = "What is 3+4?"
OPT_LONG = "the rate of change of the function is constant over the whole interval from zero to one hundred units"


def _items() -> list[BenchItem]:
    return [
        BenchItem("mathvista", "1", Q1, ["1 meter", "2 meters"], "2"),
        BenchItem("chartqa", "c7", Q2, [], "China"),
        BenchItem("cmmmu", "z1", Q3_ZH, [], "60"),
        BenchItem("tiny", "t1", Q4_SHORT, [], "7"),
        BenchItem("mmmu", "m1", "Which statement is true?", [OPT_LONG, "no"], "A"),
    ]


@pytest.fixture(scope="module")
def index() -> DecontamIndex:
    return DecontamIndex.from_items(_items(), IndexSettings())


@pytest.mark.parametrize("raw, normal", [
    ("What  is\tthe CAPITAL of France?", "what is the capital of france"),
    ("Café naïve façade", "cafe naive facade"),
    ("ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ１２", "fullwidth text12"),
    ("x = (a+b)/2; y = a-b!", "x a b 2 y a b"),
    ("“Quoted” — dashes… and «guillemets»", "quoted dashes and guillemets"),
    ("Straße", "strasse"),
    ("", ""),
])
def test_normalize_text(raw, normal):
    assert normalize_text(raw) == normal


def test_numbers_are_not_folded():
    # datatrove's default maps every number to 0; that would make these two questions one.
    assert tokenize("what is 3 + 4") != tokenize("what is 5 + 6")


def test_tokenize_cjk_per_character_and_mixed():
    assert tokenize("下列哪个选项，是正确的？") == list("下列哪个选项是正确的")
    assert tokenize("答案是ABC吗") == ["答", "案", "是", "abc", "吗"]
    assert len(tokenize("ひらがなカタカナ")) == 8
    # Diacritics are stripped (datatrove's normalisation), kana voicing marks included: on both sides alike.
    assert tokenize("ひらがな") == tokenize("ひらかな")
    assert tokenize("한국어 문장입니다") == ["한국어", "문장입니다"]  # Korean is written with spaces


@pytest.mark.parametrize("text, kind, bench", [
    (Q1, TEXT_NGRAM, "mathvista"),  # verbatim
    (Q1.upper(), TEXT_NGRAM, "mathvista"),  # case
    (Q1.replace(",", "").replace(".", " .").replace("?", ""), TEXT_NGRAM, "mathvista"),  # punctuation
    ("  " + Q1.replace(" ", "\n  \t") + "  ", TEXT_NGRAM, "mathvista"),  # whitespace
    ("Solve this: " + Q1 + " Answer: 2 meters.", TEXT_NGRAM, "mathvista"),  # embedded in a longer text
    (Q2.lower().replace("chart,", "chart"), TEXT_NGRAM, "chartqa"),
    ("题目：" + Q3_ZH.replace("，", " ") + "？", TEXT_NGRAM, "cmmmu"),  # CJK with punctuation edits
    ("what is 3 + 4", TEXT_EXACT, "tiny"),  # short: matched whole
    (OPT_LONG.upper(), TEXT_NGRAM, "mmmu"),  # a long option is indexed too
])
def test_text_copies_are_caught(index, text, kind, bench):
    m = index.check_text("text", text)
    assert m is not None and m.kind == kind and m.benchmark == bench


@pytest.mark.parametrize("text", [
    "",
    "   ",
    "A rectangular garden is 12 meters long.",  # shares words, no 13-gram
    "What is 5+6?",  # same template, other numbers
    "The answer is 2",  # a short answer is never evidence
    "what is 3 + 4 and what is 5 + 6",  # contains the short question but is not it
    "A",
    "在三角形中，角A等于六十度",  # a CJK fragment shorter than 13 characters
    "Which statement is true?",  # shorter than min_exact_tokens? no: 4 tokens, but it is an mmmu question...
])
def test_clean_texts_are_not_flagged(index, text):
    m = index.check_text("text", text)
    if text == "Which statement is true?":  # ...that is an exact copy of a benchmark question: caught
        assert m is not None and m.kind == TEXT_EXACT
    else:
        assert m is None


def test_match_names_the_ngram(index):
    m = index.check_text("question", "prefix words here " + Q2)
    assert m.detail == " ".join(tokenize(Q2)[:13]) and m.item_id == "c7" and m.reason == "contaminated_text"


def test_index_is_independent_of_item_order_and_roundtrips():
    a = DecontamIndex.from_items(_items(), IndexSettings())
    b = DecontamIndex.from_items(list(reversed(_items())), IndexSettings())
    assert a.to_bytes() == b.to_bytes()
    c = DecontamIndex.from_bytes(a.to_bytes())
    assert c.check_text("t", Q1).item_id == "1" and c.stats.items == 5 and c.nbytes > 0


# --- benchmark files ----------------------------------------------------------------------


def test_benchmark_names():
    assert benchmark_name("/b/mmmu.parquet") == "mmmu"
    assert benchmark_name("/b/MathVista/test-00000-of-00002.parquet") == "MathVista"
    assert benchmark_name("/b/MathVista/data/testmini-00000-of-00001.parquet") == "MathVista"
    assert benchmark_name("/b/ai2d.jsonl") == "ai2d"


def test_resolve_columns_defaults_and_numbered_images():
    c = resolve_columns(["id", "question", "choices", "answer", "image_2", "image_1", "image_10"], None, "f", "b")
    assert c == Columns("question", "choices", "answer", ("image_1", "image_2", "image_10"), "id")


def test_resolve_columns_missing_mapped_column_names_it():
    with pytest.raises(BenchmarkError, match=r"no column 'prompt_text' \(decontam.columns.mmmu.question\)"):
        resolve_columns(["question"], BenchColumns(question="prompt_text"), "f.parquet", "mmmu")
    with pytest.raises(BenchmarkError, match=r"'img9'"):
        resolve_columns(["question"], BenchColumns(images=["img9"]), "f.parquet", "mmmu")


def test_resolve_columns_nothing_to_check():
    with pytest.raises(BenchmarkError, match="no question column .* columns are \\['foo'\\]"):
        resolve_columns(["foo"], None, "f.parquet", "x")


def _png(seed: int, size: int = 128) -> bytes:
    img = _smooth_image(seed, size)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _smooth_image(seed: int, size: int = 128) -> Image.Image:
    """A picture with structure at several scales (pHash differs between seeds by ~32 bits)."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((size, size, 3))
    for cells, weight in ((4, 1.0), (8, 0.5), (16, 0.25)):
        small = rng.random((cells, cells, 3))
        acc += weight * np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((size, size),
                                                                                          Image.BICUBIC)) / 255
    return Image.fromarray((acc / 1.75 * 255).clip(0, 255).astype(np.uint8))


def test_items_from_parquet_with_every_image_form(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(_png(1))
    table = pa.table({
        "question": [Q1, "", None],
        "options": [json.dumps(["x", "y"]), "['p', 'q']", None],
        "answer": ["2", None, None],
        "image": [{"bytes": _png(2), "path": None}, {"bytes": None, "path": "imgs/a.png"}, None],
        "image_1": [None, _png(3), b"not an image"],
        "image_2": ["imgs/missing.png", None, None],
    })
    path = tmp_path / "bench.parquet"
    pq.write_table(table, path)
    with open(path, "rb") as fh:
        names = file_columns(fh, "parquet")
    f = BenchFile(str(path), "parquet", "b", resolve_columns(names, None, str(path), "b"))

    def read_bytes(p, limit):
        try:
            return open(p, "rb").read()
        except OSError as e:
            return str(e)

    with open(path, "rb") as fh:
        items = [item_from_row(row, f, key, read_bytes, 1 << 20) for key, row in read_benchmark_rows(fh, f)]
    assert [i.item_id for i in items] == ["row:0", "row:1", "row:2"]
    assert items[0].options == ["x", "y"] and items[1].options == ["p", "q"]
    kinds = [[(label, type(d).__name__) for label, d in i.images] for i in items]
    assert kinds[0] == [("image", "bytes"), ("image_2", "Rejection")]
    assert kinds[1] == [("image", "bytes"), ("image_1", "bytes")]
    assert kinds[2] == [("image_1", "bytes")]
    ix = DecontamIndex.from_items(items, IndexSettings())
    # Undecodable or missing benchmark images are counted and named, not fatal.
    assert ix.stats.images == 3 and ix.stats.images_unreadable == 2
    assert any("row:2/image_1: corrupt_image" in e for e in ix.stats.unreadable_examples)
    assert any("row:0/image_2: unreadable_image" in e for e in ix.stats.unreadable_examples)


def test_items_from_jsonl_with_bad_lines(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({"question": Q2, "id": 7}) + "\n{not json\n\n[1]\n")
    f = BenchFile(str(path), "jsonl", "bench", Columns("question", None, None, (), "id"))
    with open(path, "rb") as fh:
        rows = list(read_benchmark_rows(fh, f))
    assert rows[0] == ("line:1", {"question": Q2, "id": 7})
    assert [k for k, r in rows if isinstance(r, str)] == ["line:2", "line:4"]
    assert item_from_row(rows[0][1], f, "line:1", None, 1).item_id == "7"


# --- images -------------------------------------------------------------------------------


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def image_index() -> tuple[DecontamIndex, list[bytes]]:
    originals = [_png(100 + i, 192) for i in range(12)]
    items = [BenchItem("vqa", f"v{i}", images=[("image", b)]) for i, b in enumerate(originals)]
    return DecontamIndex.from_items(items, IndexSettings()), originals


def test_image_copies_are_caught(image_index):
    index, originals = image_index
    for i, data in enumerate(originals):
        img = Image.open(io.BytesIO(data)).convert("RGB")
        exact = index.check_image("image", ImageKey.of_bytes(data))
        assert exact.kind == IMAGE_EXACT and exact.item_id == f"v{i}" and exact.distance == 0
        for variant in (_jpeg(img, 35), _jpeg(img.resize((96, 96)), 80), _jpeg(img.resize((400, 400)), 60)):
            m = index.check_image("image", ImageKey.of_bytes(variant))
            assert m is not None and m.kind == IMAGE_PHASH and m.item_id == f"v{i}", (i, m)
            assert m.distance <= 8 and m.reason == "contaminated_image"


def test_clean_images_are_not_flagged(image_index):
    index, _ = image_index
    for seed in range(500, 540):
        key = ImageKey.of_bytes(_png(seed, 160))
        assert index.check_image("image", key) is None
        _, nearest = index.nearest_image_brute(key.phash)
        assert nearest > 8


def _phash_index(hashes: list[int], max_hamming: int) -> DecontamIndex:
    part = IndexPart()
    for i, h in enumerate(hashes):
        part.items.append(("b", f"i{i}"))
        part.phash.append(h)
        part.digest.append(i)
        part.image_items.append(i)
        part.image_labels.append("image")
    return DecontamIndex.from_part(part, IndexSettings(max_hamming=max_hamming))


def _flip(h: int, bits: list[int]) -> int:
    for b in bits:
        h ^= 1 << b
    return h


@pytest.mark.parametrize("max_hamming", [0, 3, 4, 7, 8, 11, 12])
def test_phash_boundary_spread_over_bands(max_hamming):
    """Exactly max_hamming differing bits spread over all four bands (multi-probe's worst case): caught;
    one more bit: not."""
    h = 0x0123_4567_89AB_CDEF
    index = _phash_index([h], max_hamming)
    spread = [(k % 4) * 16 + k // 4 for k in range(max_hamming + 1)]  # round-robin over the bands
    at = index.check_image("x", ImageKey(_flip(h, spread[:max_hamming]), 10**6))
    assert at is not None and at.distance == max_hamming
    assert index.check_image("x", ImageKey(_flip(h, spread), 10**6)) is None
    bunched = list(range(max_hamming))  # all in the lowest band
    assert index.check_image("x", ImageKey(_flip(h, bunched), 10**6)).distance == max_hamming


def test_phash_lookup_equals_brute_force():
    rng = random.Random(7)
    base = [rng.getrandbits(64) for _ in range(300)]
    # near copies of some, at every distance 0..12
    hashes = base + [_flip(b, rng.sample(range(64), rng.randint(0, 12))) for b in base[:100]]
    index = _phash_index(hashes, 8)
    for _ in range(400):
        q = _flip(rng.choice(hashes), rng.sample(range(64), rng.randint(0, 14)))
        m = index.check_image("x", ImageKey(q, 10**6))
        _, nearest = index.nearest_image_brute(q)
        if nearest <= 8:
            assert m is not None and m.distance == nearest
        else:
            assert m is None


def test_check_row_reports_every_matching_field(index):
    matches = check_row(index, [("question", Q2), ("answer", "China"), ("caption", "")], [])
    assert [(m.field, m.benchmark) for m in matches] == [("question", "chartqa")]


def test_undecodable_training_image_is_a_rejection():
    assert isinstance(ImageKey.of_bytes(b"\x89PNG\r\n garbage"), Rejection)


def test_fast_normalisation_equals_the_reference_on_mixed_scripts():
    from quarry.operators.decontam import reference_normalize

    rng = random.Random(0)
    alphabet = ("abcXYZ019 ,.;:!?-_'\"()[]{}+=*/\\|@#$%^&~`\t\n" + "ÀÉîõüçñßøåæœ“”‘’—–…«»¿¡·•°±×÷²³¼½€£©™"
                + "中文日本語ひらがなカタカナ한국어ภาษาไทยελληνικάкириллица　、。，！？：；（）【】「」ＡＢＣ１２３\u0301\u0308ﬁ")
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert normalize_text(s) == reference_normalize(s), repr(s)


@pytest.mark.parametrize("text", [Q1, Q2, Q3_ZH, "Café naïve ü " * 7, "题目 abc " * 9, "short one", ""])
def test_sliced_ngram_hashes_equal_datatrove_style_joined_hashes(text):
    from datatrove.utils.hashes.xxhash import xxhash64

    from quarry.operators.decontam import ngram_hashes, text_ngram_hashes

    tokens, hashes = text_ngram_hashes(text, 13)
    assert tokens == tokenize(text)
    assert hashes == ngram_hashes(tokens, 13) == [xxhash64(" ".join(tokens[i:i + 13]))
                                                   for i in range(len(tokens) - 12)]
