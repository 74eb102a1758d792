"""The targeted kallsyms reader and the full index agree past the first page too
(blank lines and CRs anywhere in a large dump)."""

from __future__ import annotations

import pytest

from klpelf.errors import SymbolSourceError
from klpelf.symbols import symtext
from klpelf.symbols.kallsyms import parse_symbol_text
from klpelf.symbols.symtext import open_symbol_text


def _dump(lines: int, zeroed: bool) -> list[bytes]:
    out = []
    for i in range(lines):
        addr = 0 if zeroed else 0xFFFFFFFF81000000 + 16 * i
        out.append(b"%016x T sym_%d\n" % (addr, i))
    return out


@pytest.mark.parametrize("zeroed", [False, True])
@pytest.mark.parametrize(
    "edit",
    [
        lambda ls: [*ls, b"\n"],  # a trailing blank line: the file ends "\n\n"
        lambda ls: [*ls[:500], b"\n", *ls[500:]],  # a blank line after the first page
        lambda ls: [*ls[:500], ls[500].replace(b"\n", b"\r\n"), *ls[501:]],  # one CR
    ],
)
def test_edits_past_the_first_page(
    monkeypatch: pytest.MonkeyPatch, zeroed: bool, edit: object
) -> None:
    monkeypatch.setattr(symtext, "SCAN_MIN_BYTES", 0)
    assert callable(edit)
    data = b"".join(edit(_dump(2000, zeroed)))
    assert data.find(b"\n\n") > 4096 or data.find(b"\r") > 4096
    names = ["sym_7", "sym_500", "sym_1999"]
    try:
        full = parse_symbol_text(data, "k")
        want = [[(e.address, e.type, e.module) for e in full.matches(n)] for n in names]
    except SymbolSourceError as e:
        with pytest.raises(SymbolSourceError) as exc:
            open_symbol_text(data, "k").matches(names[0])
        assert str(exc.value) == str(e)
        return
    got = open_symbol_text(data, "k")
    assert got.zeroed == full.zeroed == zeroed
    assert [[(e.address, e.type, e.module) for e in got.matches(n)] for n in names] == want
    assert all(want), "every name is found"
