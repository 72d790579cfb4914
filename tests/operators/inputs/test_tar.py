"""WebDataset tars: samples by key, the size cap, dotfiles, key.json parsed once, damage as the last item."""

from __future__ import annotations

import io
import tarfile

import pytest

from quarry.operators.inputs.tar import TarDamage, TarMember, TarSample, parse_metadata, tar_members, tar_samples


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_consecutive_members_sharing_a_key_are_one_sample():
    data = tar_bytes([("a.jpg", b"A"), ("a.txt", b"cap"), ("a.json", b'{"source": "s"}'), ("d/b.x.PNG", b"B"),
                      ("._a.jpg", b"fork"), ("d/.hidden", b"h")])
    got = list(tar_samples(io.BytesIO(data), 100))
    assert got == [TarSample("a", {"jpg": b"A", "txt": b"cap", "json": b'{"source": "s"}'}, None, {"source": "s"}),
                   TarSample("d/b", {"x.png": b"B"}, None, {})]


@pytest.mark.parametrize("blank_is_empty, meta", [
    (False, "metadata is not JSON (Expecting value: line 1 column 1 (char 0))"),
    (True, {}),
])
def test_a_member_over_the_cap_is_listed_without_bytes(blank_is_empty, meta):
    data = tar_bytes([("a.jpg", b"x" * 50), ("a.json", b"{" + b" " * 40 + b"}")])
    [s] = tar_samples(io.BytesIO(data), 10, blank_metadata_is_empty=blank_is_empty)
    assert s.members == {"jpg": None, "json": None} and s.oversize == 42 and s.meta == meta


@pytest.mark.parametrize("raw, blank_is_empty, expected", [
    (None, False, {}),
    (b'{"a": 1}', False, {"a": 1}),
    (b"[1]", False, "metadata JSON is not an object"),
    (b"", False, "metadata is not JSON (Expecting value: line 1 column 1 (char 0))"),
    (b"", True, {}),
    (b"\xff", False, "metadata is not JSON ('utf-8' codec can't decode byte 0xff in position 0: invalid start byte)"),
    (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, False, "metadata is not JSON (nested too deeply)"),
])
def test_parse_metadata(raw, blank_is_empty, expected):
    assert parse_metadata(raw, blank_is_empty) == expected


def test_a_cut_tar_keeps_what_was_complete_and_ends_with_damage():
    data = tar_bytes([("a.jpg", b"A" * 600), ("b.jpg", b"B" * 600), ("b.txt", b"t")])
    got = list(tar_samples(io.BytesIO(data[:2300]), 10_000))  # cut inside b.jpg's data (a: 512 + 1024 bytes)
    assert [type(x) for x in got] == [TarSample, TarDamage]
    assert got[0].key == "a" and got[1].key == "b#unreadable" and "ReadError" in got[1].detail
    [damage] = tar_samples(io.BytesIO(b"not a tar at all"), 10)
    assert damage.key == "#unreadable"


def test_tar_members_one_by_one_with_a_suffix_filter():
    data = tar_bytes([("icons/a.svg", b"<svg/>"), ("icons/b.SVGZ", b"z" * 30), ("notes.txt", b"x"), (".c.svg", b"")])
    assert list(tar_members(io.BytesIO(data), 10, (".svg", ".svgz"))) == [
        TarMember("icons/a.svg", b"<svg/>", 6), TarMember("icons/b.SVGZ", None, 30)]
    assert list(tar_members(io.BytesIO(data[:700]), 10, (".svg",)))[-1].key == "#unreadable"
