"""JSONL of one opened file: objects with line numbers, the first few, lines of bounded size."""

from __future__ import annotations

import io

import pytest

from quarry.operators.inputs.jsonl import bounded_lines, bounded_objects, jsonl_objects


@pytest.mark.parametrize("data, limit, expected", [
    (b"a\nbb\n", 10, [(1, b"a", 1), (2, b"bb", 2)]),
    (b"a\nbb", 10, [(1, b"a", 1), (2, b"bb", 2)]),  # no final newline
    (b"", 10, []),
    (b"\n\n", 10, [(1, b"", 0), (2, b"", 0)]),
    (b"short\n" + b"x" * 25 + b"\nok\n", 10, [(1, b"short", 5), (2, None, 25), (3, b"ok", 2)]),
    (b"x" * 25, 10, [(1, None, 25)]),
])
def test_bounded_lines(data, limit, expected):
    assert list(bounded_lines(io.BytesIO(data), limit)) == expected


def test_bounded_lines_across_chunks(monkeypatch):
    import quarry.operators.inputs.jsonl as mod

    monkeypatch.setattr(mod, "_CHUNK", 4)
    data = b"abcdefghij\n" + b"y" * 30 + b"\nlast"
    assert list(bounded_lines(io.BytesIO(data), 12)) == [(1, b"abcdefghij", 10), (2, None, 30), (3, b"last", 4)]


@pytest.mark.parametrize("line, expected", [
    (b'{"a": 1}', {"a": 1}),
    (b"[1, 2]", "line is a JSON list, not an object"),
    (b"not json", "Expecting value at column 1"),
    (b'"text"', "line is a JSON str, not an object"),
])
def test_jsonl_objects(line, expected):
    assert list(jsonl_objects(io.BytesIO(b"\n" + line + b"\n"))) == [(2, expected)]


@pytest.mark.parametrize("data, expected", [
    (b'{"a": 1}\n', [(1, {"a": 1}, 8)]),
    (b'\n  \n{"a": 1}', [(3, {"a": 1}, 8)]),  # blank lines skipped, numbering kept
    (b"[1]\n", [(1, "line is a JSON list, not an object", 3)]),
    (b'{"a": "' + b"x" * 20 + b'"}\n', [(1, None, 29)]),  # over the limit: never parsed
])
def test_bounded_objects(data, expected):
    assert list(bounded_objects(io.BytesIO(data), 16)) == expected


def test_bounded_objects_say_why_a_line_is_not_json():
    [(lineno, why, size)] = bounded_objects(io.BytesIO(b"{broken\n"), 100)
    assert (lineno, size) == (1, 7) and why.startswith("not JSON (")


DEEP = b"[" * 100_000 + b"]" * 100_000  # deeper than the interpreter's recursion limit


def test_deep_nesting_is_a_reason_not_a_recursion_error():
    assert list(jsonl_objects(io.BytesIO(DEEP + b"\n" + b'{"a": 1}\n'))) == [(1, "JSON nested too deeply"), (2, {"a": 1})]
    [(lineno, why, _)] = bounded_objects(io.BytesIO(b'{"a": ' + DEEP + b"}\n"), 1 << 20)
    assert (lineno, why) == (1, "JSON nested too deeply")


def test_a_line_over_the_limit_is_skipped_unread_as_record_too_large():
    from quarry.operators.inputs.jsonl import LineTooLong, line_reason

    data = b'{"a": "' + b"x" * 100 + b'"}\n{"b": 2}\n'
    [(first, why), (second, rec)] = jsonl_objects(io.BytesIO(data), limit=50)
    assert (first, second, rec) == (1, 2, {"b": 2})
    assert isinstance(why, LineTooLong) and "109 bytes" in why
    assert line_reason(why) == "record_too_large" and line_reason("not an object") == "invalid_json"
