"""Input text printed on one safe line (klpelf.text)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from klpelf.text import MAX_LINE, escape, shorten, terminal_line


def test_ordinary_text_unchanged() -> None:
    s = "mod.ko: .klp.rela.vmlinux.text[42]: error: symbol 'foo' not found (C:\\x)"
    assert escape(s) == s == terminal_line(s)


def test_controls_and_undecodable_bytes() -> None:
    name = b"evil\nname\x1b[31m\x80\\".decode("utf-8", "surrogateescape")
    assert escape(name) == "evil\\nname\\e[31m\\x80\\\\"
    assert escape("a\u2028b\x7f\x9bc") == "a\\u2028b\\x7f\\x9bc"


def test_long_lines_keep_both_ends() -> None:
    s = "head" + "x" * 6_000_000 + "tail"
    out = shorten(s)
    assert len(out) <= MAX_LINE + 60
    assert out.startswith("headx") and out.endswith("xtail")
    keep = MAX_LINE // 2 - 20
    assert f" ... [{len(s) - 2 * keep} characters cut] ... " in out


@given(st.text())
def test_always_one_printable_line(s: str) -> None:
    out = terminal_line(s, 200)
    assert out.splitlines() == [out] or out == ""
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)
    assert all(not 0xDC80 <= ord(c) <= 0xDCFF for c in out)
    assert len(out) <= 260
