"""klp symbol and relocation section names, parsed as the kernel's vsscanf does.

Every expectation below follows from lib/vsprintf.c vsscanf() (see the docstring of
klpelf.klp.names): literals compare bytes; input ending before a conversion stops the
scan; %N[^x] needs a non-empty match, counts bytes and skips no whitespace; %lu skips
whitespace (kernel isspace, including byte 0xA0), is base 10 only, takes no sign,
wraps modulo 2**64, and ignores what follows the digits.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klpelf.errors import KlpError, KlpFormatError
from klpelf.klp.names import (
    KSYM_NAME_LEN,
    KSYM_NAME_LEN_OLD,
    MODULE_NAME_LEN,
    OBJNAME_MAX,
    SYMPOS_MAX,
    KlpAnnotationName,
    KlpDraftRelSectionName,
    KlpRelaSectionName,
    KlpSymbolName,
    _c_string,
    _scan_canonical,
    canonical_names,
    classify_symbol_name,
    kernel_sscanf,
    klp_annotation_format,
    klp_sym_format,
    parse_annotation_symbol,
    parse_draft_rel_section,
)

OBJ55 = "m" * 55
OBJ56 = "m" * 56
NAME511 = "f" * 511
NAME512 = "f" * 512
NAME127 = "f" * 127
NAME128 = "f" * 128
E_ACUTE = "\u00e9"  # two bytes in UTF-8: C3 A9


def test_constants() -> None:
    assert KSYM_NAME_LEN_OLD == 128
    assert KSYM_NAME_LEN == 512
    assert MODULE_NAME_LEN == 56
    assert OBJNAME_MAX == 55
    assert SYMPOS_MAX == 2**64 - 1
    assert klp_sym_format() == ".klp.sym.%55[^.].%511[^,],%lu"
    assert klp_sym_format(KSYM_NAME_LEN_OLD) == ".klp.sym.%55[^.].%127[^,],%lu"
    assert klp_annotation_format() == ".klp.sym.rela.%55[^.].%55[^.].%511[^,],%lu"


@pytest.mark.parametrize("bad", [0, 1, 513])
def test_klp_sym_format_rejects_bad_ksym_name_len(bad: int) -> None:
    with pytest.raises(ValueError, match="ksym_name_len"):
        klp_sym_format(bad)


# --------------------------------------------------------------------------------------
# The vsscanf engine itself


@pytest.mark.parametrize(
    ("buf", "fmt", "values"),
    [
        # The example in the comment above the '[' case of vsscanf().
        (b"00:0a:95", "%2[^:]:%2[^:]:%2[^:]", (b"00", b"0a", b"95")),
        # Literal mismatch stops the scan; values so far count.
        (b"ab:cd", "%2[^:]-%2[^:]", (b"ab",)),
        # Input ends before a conversion: "if (!*str) break;".
        (b"ab:", "%2[^:]:%2[^:]", (b"ab",)),
        # Empty %[ match ends the scan.
        (b":cd", "%2[^:]:%2[^:]", ()),
        # A non-negated set.
        (b"abcx", "%9[abc]x", (b"abc",)),
        # %[ does not skip leading whitespace.
        (b" ab", "%5[^ ]", ()),
        # Whitespace in the format matches any amount, including none.
        (b"a   b", "%1[a] %1[b]", (b"a", b"b")),
        (b"ab", "%1[a] %1[b]", (b"a", b"b")),
        # %lu skips whitespace, including the kernel-ctype byte 0xA0.
        (b"\t\n\v\f\r \xa042", "%lu", (42,)),
        # No sign for an unsigned conversion.
        (b"-1", "%lu", ()),
        (b"+1", "%lu", ()),
        # Base 10 only: "0x10" reads 0.
        (b"0x10", "%lu", (0,)),
        # %% matches a literal percent sign and is not counted.
        (b"%7", "%%%u", (7,)),
        (b"7", "%%%u", ()),
        # Field width on a number limits the digits read.
        (b"12345", "%2u%u", (12, 345)),
        # The buffer is a C string: nothing after NUL is seen.
        (b"12\x0034", "%u%u", (12,)),
    ],
    ids=[
        "kernel-doc-example",
        "literal-mismatch",
        "input-ends-before-conversion",
        "empty-set-match",
        "positive-set",
        "set-no-ws-skip",
        "fmt-ws-many",
        "fmt-ws-none",
        "lu-skips-kernel-isspace",
        "lu-minus",
        "lu-plus",
        "lu-0x",
        "percent",
        "percent-mismatch",
        "number-width",
        "nul-terminates",
    ],
)
def test_kernel_sscanf(buf: bytes, fmt: str, values: tuple[bytes | int, ...]) -> None:
    res = kernel_sscanf(buf, fmt)
    assert res.values == values
    assert res.count == len(values)


@pytest.mark.parametrize(
    ("fmt", "value", "wrapped"),
    [
        ("%hhu", 2**8 + 3, True),
        ("%hu", 2**16 + 3, True),
        ("%u", 2**32 + 3, True),
        ("%lu", 2**32 + 3, False),
        ("%llu", 2**32 + 3, False),
        ("%lu", 2**64 + 3, True),
        ("%llu", 2**64 + 3, True),
    ],
    ids=["hhu", "hu", "u", "lu", "llu", "lu-64", "llu-64"],
)
def test_kernel_sscanf_wraps_to_the_c_type(fmt: str, value: int, wrapped: bool) -> None:
    res = kernel_sscanf(str(value).encode(), fmt)
    (got,) = res.values
    assert got == (3 if wrapped else value)
    assert res.wrapped is wrapped


def test_kernel_sscanf_ulong_bits_32() -> None:
    assert kernel_sscanf(b"4294967299", "%lu", ulong_bits=32).values == (3,)
    with pytest.raises(ValueError, match="ulong_bits"):
        kernel_sscanf(b"1", "%lu", ulong_bits=16)


@pytest.mark.parametrize(
    "fmt", ["%[^.]", "%5[^.", "%5[]", "%d", "%s", "%*u", "%n", "%0u", "%l"], ids=str
)
def test_kernel_sscanf_rejects_unsupported_formats(fmt: str) -> None:
    with pytest.raises(ValueError, match="kernel_sscanf"):
        kernel_sscanf(b"x", fmt)


def test_kernel_sscanf_spans() -> None:
    res = kernel_sscanf(b".klp.sym.vmlinux.foo, 12x", klp_sym_format())
    assert res.values == (b"vmlinux", b"foo", 12)
    assert res.spans == ((9, 16), (17, 20), (22, 24))


# --------------------------------------------------------------------------------------
# .klp.sym.<objname>.<name>,<sympos>

SYMBOL_CASES: list[tuple[str, str, int, int, str | None, str | None, int | None]] = [
    # id, name, ksym_name_len, count, objname, name, sympos
    ("canonical-vmlinux", ".klp.sym.vmlinux.printk,0", 512, 3, "vmlinux", "printk", 0),
    ("canonical-module", ".klp.sym.ext4.ext4_attr_store,1", 512, 3, "ext4", "ext4_attr_store", 1),
    ("sympos-big", ".klp.sym.vmlinux.f,123456789", 512, 3, "vmlinux", "f", 123456789),
    # Dotted symbol names: the name runs to the first ',', only the objname stops at '.'.
    ("dotted-isra", ".klp.sym.vmlinux.foo.isra.0,0", 512, 3, "vmlinux", "foo.isra.0", 0),
    ("dotted-cold", ".klp.sym.vmlinux.foo.cold,2", 512, 3, "vmlinux", "foo.cold", 2),
    ("dotted-static-local", ".klp.sym.vmlinux.__func__.12,0", 512, 3, "vmlinux", "__func__.12", 0),
    (
        "dotted-many",
        ".klp.sym.kvm.a.constprop.0.isra.0,1",
        512,
        3,
        "kvm",
        "a.constprop.0.isra.0",
        1,
    ),
    # The objname may hold anything but '.' and NUL, commas and spaces included.
    ("objname-with-comma", ".klp.sym.a,b.foo,0", 512, 3, "a,b", "foo", 0),
    ("objname-with-space", ".klp.sym.vm linux.foo,0", 512, 3, "vm linux", "foo", 0),
    # %[ skips no whitespace: spaces are part of the names.
    ("name-leading-space", ".klp.sym.vmlinux. foo,0", 512, 3, "vmlinux", " foo", 0),
    ("name-trailing-space", ".klp.sym.vmlinux.foo ,0", 512, 3, "vmlinux", "foo ", 0),
    # Prefix problems: literal bytes, case-sensitive, no whitespace skipping -> count 0.
    ("no-prefix", "printk", 512, 0, None, None, None),
    ("prefix-wrong-case", ".KLP.sym.vmlinux.printk,0", 512, 0, None, None, None),
    ("prefix-leading-space", " .klp.sym.vmlinux.printk,0", 512, 0, None, None, None),
    ("prefix-truncated", ".klp.sym", 512, 0, None, None, None),
    ("prefix-only", ".klp.sym.", 512, 0, None, None, None),
    ("empty-objname", ".klp.sym..printk,0", 512, 0, None, None, None),
    ("empty-string", "", 512, 0, None, None, None),
    # Objname problems -> count 1.
    ("objname-only", ".klp.sym.vmlinux", 512, 1, "vmlinux", None, None),
    ("objname-dot-end", ".klp.sym.vmlinux.", 512, 1, "vmlinux", None, None),
    ("empty-name", ".klp.sym.vmlinux.,0", 512, 1, "vmlinux", None, None),
    ("objname-55", f".klp.sym.{OBJ55}.foo,0", 512, 3, OBJ55, "foo", 0),
    ("objname-56", f".klp.sym.{OBJ56}.foo,0", 512, 1, OBJ55, None, None),
    # Name length -> count 2 when over the width (the ',' literal then mismatches).
    ("name-511", f".klp.sym.vmlinux.{NAME511},0", 512, 3, "vmlinux", NAME511, 0),
    ("name-512", f".klp.sym.vmlinux.{NAME512},0", 512, 2, "vmlinux", NAME511, None),
    ("name-127-old", f".klp.sym.vmlinux.{NAME127},0", 128, 3, "vmlinux", NAME127, 0),
    ("name-128-old", f".klp.sym.vmlinux.{NAME128},0", 128, 2, "vmlinux", NAME127, None),
    ("name-128-new", f".klp.sym.vmlinux.{NAME128},0", 512, 3, "vmlinux", NAME128, 0),
    # Sympos problems -> count 2.
    ("no-pos", ".klp.sym.vmlinux.printk", 512, 2, "vmlinux", "printk", None),
    ("empty-pos", ".klp.sym.vmlinux.printk,", 512, 2, "vmlinux", "printk", None),
    ("pos-only-spaces", ".klp.sym.vmlinux.printk,  ", 512, 2, "vmlinux", "printk", None),
    ("pos-minus", ".klp.sym.vmlinux.printk,-1", 512, 2, "vmlinux", "printk", None),
    ("pos-plus", ".klp.sym.vmlinux.printk,+1", 512, 2, "vmlinux", "printk", None),
    ("pos-letters", ".klp.sym.vmlinux.printk,x", 512, 2, "vmlinux", "printk", None),
    ("pos-space-minus", ".klp.sym.vmlinux.printk, -1", 512, 2, "vmlinux", "printk", None),
    # Unicode NBSP is C2 A0 in UTF-8; C2 is not kernel whitespace.
    ("pos-unicode-nbsp", ".klp.sym.vmlinux.printk,\u00a05", 512, 2, "vmlinux", "printk", None),
    # Sympos accepted with quirks -> count 3.
    ("pos-leading-spaces", ".klp.sym.vmlinux.printk,  5", 512, 3, "vmlinux", "printk", 5),
    ("pos-leading-ws-mix", ".klp.sym.vmlinux.printk,\t\n\v\f\r 5", 512, 3, "vmlinux", "printk", 5),
    # A raw 0xA0 byte (surrogate-escaped) is kernel whitespace (lib/ctype.c entry 160).
    ("pos-byte-a0", ".klp.sym.vmlinux.printk,\udca05", 512, 3, "vmlinux", "printk", 5),
    ("pos-leading-zeros", ".klp.sym.vmlinux.printk,007", 512, 3, "vmlinux", "printk", 7),
    ("pos-0x10", ".klp.sym.vmlinux.printk,0x10", 512, 3, "vmlinux", "printk", 0),
    ("pos-trailing-junk", ".klp.sym.vmlinux.printk,1xyz", 512, 3, "vmlinux", "printk", 1),
    ("pos-trailing-comma", ".klp.sym.vmlinux.printk,1,2", 512, 3, "vmlinux", "printk", 1),
    ("pos-trailing-space", ".klp.sym.vmlinux.printk,1 2", 512, 3, "vmlinux", "printk", 1),
    ("pos-ulong-max", f".klp.sym.vmlinux.f,{2**64 - 1}", 512, 3, "vmlinux", "f", 2**64 - 1),
    ("pos-overflow-0", f".klp.sym.vmlinux.f,{2**64}", 512, 3, "vmlinux", "f", 0),
    ("pos-overflow-1", f".klp.sym.vmlinux.f,{2**64 + 1}", 512, 3, "vmlinux", "f", 1),
    (
        "pos-30-nines",
        ".klp.sym.vmlinux.f," + "9" * 30,
        512,
        3,
        "vmlinux",
        "f",
        (10**30 - 1) % 2**64,
    ),
    # The annotation spelling also satisfies the kernel's format (objname "rela").
    ("annotation-as-kernel", ".klp.sym.rela.x.y.z,0", 512, 3, "rela", "x.y.z", 0),
    # C string: the kernel never sees past NUL.
    ("nul-after-pos", ".klp.sym.vmlinux.printk,1\x00junk", 512, 3, "vmlinux", "printk", 1),
    ("nul-in-objname", ".klp.sym.vmlinux\x00.printk,1", 512, 1, "vmlinux", None, None),
]


@pytest.mark.parametrize("case", SYMBOL_CASES, ids=[case[0] for case in SYMBOL_CASES])
def test_symbol_scan(
    case: tuple[str, str, int, int, str | None, str | None, int | None],
) -> None:
    _, s, ksym_name_len, count, objname, name, sympos = case
    scan = KlpSymbolName.scan(s, ksym_name_len=ksym_name_len)
    assert (scan.count, scan.objname, scan.name, scan.sympos) == (count, objname, name, sympos)
    assert scan.ok is (count == 3)
    assert (scan.reason is None) is (count == 3)
    if count == 3:
        assert sympos is not None and objname is not None and name is not None
        parsed = KlpSymbolName.parse(s, ksym_name_len=ksym_name_len)
        assert parsed == KlpSymbolName(objname, name, sympos)
    else:
        with pytest.raises(KlpFormatError) as info:
            KlpSymbolName.parse(s, ksym_name_len=ksym_name_len)
        assert str(info.value) == f"symbol {s} has an incorrectly formatted name"


@pytest.mark.parametrize(
    ("s", "reason"),
    [
        ("printk", "does not start with '.klp.sym.'"),
        (".klp.sym.", "object name is missing"),
        (".klp.sym..printk,0", "object name is empty"),
        (".klp.sym.vmlinux", "ends after the object name (no '.' follows)"),
        (f".klp.sym.{OBJ56}.foo,0", "object name is longer than 55 bytes"),
        (".klp.sym.vmlinux.", "symbol name is missing"),
        (".klp.sym.vmlinux.,0", "symbol name is empty"),
        (f".klp.sym.vmlinux.{NAME512},0", "symbol name is longer than 511 bytes"),
        (".klp.sym.vmlinux.printk", "ends after the symbol name (no ',' follows)"),
        (".klp.sym.vmlinux.printk,", "sympos is missing"),
        (".klp.sym.vmlinux.printk, \t", "sympos is missing"),
        (".klp.sym.vmlinux.printk,-1", "sympos does not start with a decimal digit (found '-')"),
        (".klp.sym.vmlinux.printk,+1", "sympos does not start with a decimal digit (found '+')"),
        (".klp.sym.vmlinux.printk,\u00a01", "(found byte 0xc2)"),
    ],
    ids=[
        "no-prefix",
        "prefix-only",
        "empty-objname",
        "objname-only",
        "objname-56",
        "objname-dot-end",
        "empty-name",
        "name-512",
        "no-pos",
        "empty-pos",
        "pos-only-whitespace",
        "pos-minus",
        "pos-plus",
        "pos-unicode-nbsp",
    ],
)
def test_symbol_scan_reason(s: str, reason: str) -> None:
    scan = KlpSymbolName.scan(s)
    assert scan.reason is not None
    assert reason in scan.reason


def test_symbol_scan_reason_uses_ksym_name_len() -> None:
    scan = KlpSymbolName.scan(f".klp.sym.vmlinux.{NAME128},0", ksym_name_len=KSYM_NAME_LEN_OLD)
    assert scan.reason == "symbol name is longer than 127 bytes"


@pytest.mark.parametrize(
    ("s", "ignored", "wrapped", "canonical"),
    [
        (".klp.sym.vmlinux.printk,0", "", False, True),
        (".klp.sym.vmlinux.foo.isra.0,12", "", False, True),
        (".klp.sym.vmlinux.printk,007", "", False, False),
        (".klp.sym.vmlinux.printk, 7", "", False, False),
        (".klp.sym.vmlinux.printk,1xyz", "xyz", False, False),
        (".klp.sym.vmlinux.printk,0x10", "x10", False, False),
        (f".klp.sym.vmlinux.printk,{2**64 + 5}", "", True, False),
        (".klp.sym.vmlinux.printk,1\x00x", "", False, False),
    ],
    ids=[
        "canonical",
        "canonical-dotted",
        "leading-zeros",
        "leading-space",
        "trailing-junk",
        "hex",
        "overflow",
        "nul",
    ],
)
def test_symbol_scan_quirks(s: str, ignored: str, wrapped: bool, canonical: bool) -> None:
    scan = KlpSymbolName.scan(s)
    assert scan.ok
    assert scan.ignored == ignored
    assert scan.wrapped is wrapped
    assert scan.canonical is canonical


@pytest.mark.parametrize(
    "s",
    [
        ".klp.sym.vmlinux.printk,0",
        ".klp.sym.ext4.ext4_attr_store,1",
        ".klp.sym.vmlinux.foo.isra.0,3",
        f".klp.sym.{OBJ55}.{NAME511},{2**64 - 1}",
        f".klp.sym.{E_ACUTE * 27}.{E_ACUTE * 255},0",
        ".klp.sym.vmlinux.f\udcffo,0",
    ],
    ids=["vmlinux", "module", "dotted", "max-lengths", "non-ascii-max", "raw-byte"],
)
def test_symbol_str_round_trip(s: str) -> None:
    assert str(KlpSymbolName.parse(s)) == s
    assert KlpSymbolName.scan(s).canonical


def test_symbol_str_is_canonical() -> None:
    assert str(KlpSymbolName.parse(".klp.sym.vmlinux.printk,  007junk")) == (
        ".klp.sym.vmlinux.printk,7"
    )


def test_symbol_is_vmlinux() -> None:
    assert KlpSymbolName("vmlinux", "printk", 0).is_vmlinux
    assert not KlpSymbolName("ext4", "printk", 0).is_vmlinux
    assert not KlpSymbolName("vmlinux2", "printk", 0).is_vmlinux


@pytest.mark.parametrize(
    ("objname", "name", "sympos"),
    [
        ("", "f", 0),
        ("a.b", "f", 0),
        (OBJ56, "f", 0),
        (E_ACUTE * 28, "f", 0),
        ("a\x00", "f", 0),
        ("vmlinux", "", 0),
        ("vmlinux", "a,b", 0),
        ("vmlinux", NAME512, 0),
        ("vmlinux", E_ACUTE * 256, 0),
        ("vmlinux", "f", -1),
        ("vmlinux", "f", 2**64),
    ],
    ids=[
        "empty-objname",
        "dotted-objname",
        "objname-56",
        "objname-56-bytes-28-chars",
        "objname-nul",
        "empty-name",
        "name-comma",
        "name-512",
        "name-512-bytes-256-chars",
        "sympos-negative",
        "sympos-too-big",
    ],
)
def test_symbol_constructor_rejects(objname: str, name: str, sympos: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        KlpSymbolName(objname, name, sympos)


def test_symbol_equality_is_bytewise() -> None:
    # "\udcc3\udca9" (two escaped bytes) and "\u00e9" are the same bytes C3 A9.
    a = KlpSymbolName("m\udcc3\udca9", "f", 0)
    b = KlpSymbolName(f"m{E_ACUTE}", "f", 0)
    assert a == b
    assert hash(a) == hash(b)
    assert a.objname == f"m{E_ACUTE}"


def test_symbol_name_is_frozen_and_slotted() -> None:
    sym = KlpSymbolName("vmlinux", "printk", 0)
    with pytest.raises(AttributeError):
        sym.sympos = 1  # type: ignore[misc]
    assert not hasattr(sym, "__dict__")


def test_format_error_is_klp_error() -> None:
    with pytest.raises(KlpError):
        KlpSymbolName.parse("nope")
    with pytest.raises(ValueError, match="incorrectly formatted"):
        KlpSymbolName.parse("nope")


# Widths count bytes, not characters -------------------------------------------------


@pytest.mark.parametrize(
    ("objname", "count"),
    [
        (E_ACUTE * 27, 3),  # 54 bytes
        (E_ACUTE * 27 + "a", 3),  # 55 bytes, 28 characters
        (E_ACUTE * 28, 1),  # 56 bytes, only 28 characters
        ("\udcff" * 55, 3),  # 55 raw bytes
        ("\udcff" * 56, 1),
    ],
    ids=["54-bytes", "55-bytes-28-chars", "56-bytes-28-chars", "55-raw-bytes", "56-raw-bytes"],
)
def test_symbol_objname_width_counts_bytes(objname: str, count: int) -> None:
    assert len(objname) <= 56
    assert KlpSymbolName.scan(f".klp.sym.{objname}.foo,0").count == count


@pytest.mark.parametrize(
    ("name", "ksym_name_len", "count"),
    [
        (E_ACUTE * 255 + "a", 512, 3),  # 511 bytes
        (E_ACUTE * 256, 512, 2),  # 512 bytes, 256 characters
        (E_ACUTE * 63 + "a", 128, 3),  # 127 bytes
        (E_ACUTE * 64, 128, 2),  # 128 bytes, 64 characters
    ],
    ids=["511-bytes", "512-bytes-256-chars", "127-bytes-old", "128-bytes-64-chars-old"],
)
def test_symbol_name_width_counts_bytes(name: str, ksym_name_len: int, count: int) -> None:
    scan = KlpSymbolName.scan(f".klp.sym.vmlinux.{name},0", ksym_name_len=ksym_name_len)
    assert scan.count == count


def test_symbol_truncated_objname_keeps_partial_character() -> None:
    # 28 x C3 A9: the kernel copies 55 bytes, ending in the lone lead byte C3.
    scan = KlpSymbolName.scan(f".klp.sym.{E_ACUTE * 28}.foo,0")
    assert scan.count == 1
    assert scan.objname == E_ACUTE * 27 + "\udcc3"


# --------------------------------------------------------------------------------------
# .klp.rela.<objname><suffix>

SECTION_CASES: list[tuple[str, str, str, str, str, str | None]] = [
    # id, name, objname, suffix, overflow, target_name
    (
        "doc-vmlinux",
        ".klp.rela.vmlinux.text.cmdline_proc_show",
        "vmlinux",
        ".text.cmdline_proc_show",
        "",
        ".text.cmdline_proc_show",
    ),
    (
        "doc-ext4",
        ".klp.rela.ext4.text.ext4_attr_store",
        "ext4",
        ".text.ext4_attr_store",
        "",
        ".text.ext4_attr_store",
    ),
    ("plain-text", ".klp.rela.vmlinux.text", "vmlinux", ".text", "", ".text"),
    ("no-suffix", ".klp.rela.vmlinux", "vmlinux", "", "", None),
    ("dot-suffix", ".klp.rela.vmlinux.", "vmlinux", ".", "", "."),
    # klp-build (objtool klp-post-link.c) writes "%s.%s" with a name that starts with '.'.
    (
        "klp-build-double-dot",
        ".klp.rela.vmlinux..text.foo",
        "vmlinux",
        "..text.foo",
        "",
        ".text.foo",
    ),
    ("objname-55", f".klp.rela.{OBJ55}.text", OBJ55, ".text", "", ".text"),
    # The kernel reads 55 bytes and stops with count 1: silently truncated.
    ("objname-56", f".klp.rela.{OBJ56}.text", OBJ55, ".text", "m", ".text"),
    ("objname-60-no-suffix", ".klp.rela." + "m" * 60, OBJ55, "", "m" * 5, None),
    ("objname-with-comma-space", ".klp.rela.a, b.text", "a, b", ".text", "", ".text"),
    ("nul-ends-name", ".klp.rela.vmlinux.text\x00junk", "vmlinux", ".text", "", ".text"),
]


@pytest.mark.parametrize(
    ("s", "objname", "suffix", "overflow", "target"),
    [case[1:] for case in SECTION_CASES],
    ids=[case[0] for case in SECTION_CASES],
)
def test_section_parse(
    s: str, objname: str, suffix: str, overflow: str, target: str | None
) -> None:
    sec = KlpRelaSectionName.parse(s)
    assert (sec.objname, sec.suffix, sec.objname_overflow) == (objname, suffix, overflow)
    assert sec.truncated is bool(overflow)
    assert sec.full_objname == objname + overflow
    assert sec.target_name == target
    assert str(sec) == s.split("\x00", maxsplit=1)[0]
    assert KlpRelaSectionName.scan(s).ok


@pytest.mark.parametrize(
    ("s", "reason"),
    [
        ("", "does not start with '.klp.rela.'"),
        (".rela.text", "does not start with '.klp.rela.'"),
        (".KLP.rela.vmlinux.text", "does not start with '.klp.rela.'"),
        (" .klp.rela.vmlinux.text", "does not start with '.klp.rela.'"),
        (".klp.rela", "does not start with '.klp.rela.'"),
        (".klp.rel.vmlinux.text", "does not start with '.klp.rela.'"),
        (".klp.rela.", "object name is missing"),
        (".klp.rela..text", "object name is empty"),
    ],
    ids=[
        "empty",
        "plain-rela",
        "wrong-case",
        "leading-space",
        "prefix-truncated",
        "draft-spelling",
        "prefix-only",
        "empty-objname",
    ],
)
def test_section_rejected(s: str, reason: str) -> None:
    scan = KlpRelaSectionName.scan(s)
    assert scan.count == 0
    assert scan.name is None
    assert scan.reason == reason
    with pytest.raises(KlpFormatError) as info:
        KlpRelaSectionName.parse(s)
    assert str(info.value) == f"section {s} has an incorrectly formatted name"


def test_section_truncation_counts_bytes_and_round_trips() -> None:
    s = f".klp.rela.{E_ACUTE * 28}.text"  # 28 characters, 56 bytes
    sec = KlpRelaSectionName.parse(s)
    assert sec.truncated
    assert sec.objname == E_ACUTE * 27 + "\udcc3"  # the 55 bytes the kernel compares
    assert sec.objname_overflow == "\udca9"
    assert sec.full_objname == E_ACUTE * 28
    assert str(sec) == s
    assert not KlpRelaSectionName.parse(f".klp.rela.{E_ACUTE * 27}a.text").truncated


def test_section_is_vmlinux() -> None:
    assert KlpRelaSectionName.parse(".klp.rela.vmlinux.text.foo").is_vmlinux
    assert not KlpRelaSectionName.parse(".klp.rela.vmlinux2.text.foo").is_vmlinux


@pytest.mark.parametrize(
    ("s", "target", "matches"),
    [
        (".klp.rela.vmlinux.text.foo", ".text.foo", True),
        (".klp.rela.vmlinux..text.foo", ".text.foo", True),
        (".klp.rela.vmlinux.text.foo", "text.foo", True),
        (".klp.rela.vmlinux.text.foo", ".text.bar", False),
        (".klp.rela.vmlinux", ".text", False),
    ],
    ids=["kpatch-style", "klp-build-style", "undotted-target", "other-target", "no-suffix"],
)
def test_section_matches_target(s: str, target: str, matches: bool) -> None:
    assert KlpRelaSectionName.parse(s).matches_target(target) is matches


@pytest.mark.parametrize(
    ("objname", "suffix", "overflow"),
    [
        ("", ".text", ""),
        ("a.b", ".text", ""),
        (OBJ56, ".text", ""),
        ("vmlinux", "text", ""),
        ("vmlinux", ".te\x00xt", ""),
        ("vmlinux", ".text", "x"),
        (OBJ55, ".text", "x.y"),
    ],
    ids=[
        "empty-objname",
        "dotted-objname",
        "objname-56",
        "suffix-no-dot",
        "suffix-nul",
        "overflow-short-objname",
        "overflow-dot",
    ],
)
def test_section_constructor_rejects(objname: str, suffix: str, overflow: str) -> None:
    with pytest.raises(ValueError, match="must"):
        KlpRelaSectionName(objname, suffix, overflow)


# --------------------------------------------------------------------------------------
# The 2016 draft spelling .klp.rel.<objname>.<section>


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        (".klp.rel.vmlinux.text.foo", KlpDraftRelSectionName("vmlinux", ".text.foo")),
        (".klp.rel.ext4", KlpDraftRelSectionName("ext4", "")),
        (".klp.rela.vmlinux.text.foo", None),
        (".klp.rel..text", None),
        (".klp.rel.", None),
        (".rel.text", None),
    ],
    ids=["draft", "draft-no-suffix", "merged-spelling", "empty-objname", "prefix-only", "rel"],
)
def test_parse_draft_rel_section(s: str, expected: KlpDraftRelSectionName | None) -> None:
    assert parse_draft_rel_section(s) == expected


def test_draft_rel_section_is_not_kernel_content() -> None:
    s = ".klp.rel.vmlinux.text.foo"
    draft = parse_draft_rel_section(s)
    assert draft is not None
    assert str(draft) == s
    assert not KlpRelaSectionName.scan(s).ok
    assert str(draft.to_rela()) == ".klp.rela.vmlinux.text.foo"


# --------------------------------------------------------------------------------------
# klp-convert annotations .klp.sym.rela.<lp_obj>.<sym_obj>.<sym>,<pos>


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        (
            ".klp.sym.rela.vmlinux.vmlinux.saved_command_line,0",
            KlpAnnotationName("vmlinux", "vmlinux", "saved_command_line", 0),
        ),
        (
            ".klp.sym.rela.test_klp_convert_mod.vmlinux.foo.isra.0,2",
            KlpAnnotationName("test_klp_convert_mod", "vmlinux", "foo.isra.0", 2),
        ),
        (".klp.sym.rela.x.y.z,0", KlpAnnotationName("x", "y", "z", 0)),
        (".klp.sym.rela.x.y,0", None),
        (".klp.sym.rela.x..z,0", None),
        (".klp.sym.rela.x.y.z", None),
        (".klp.sym.rela.x.y.z,-1", None),
        (f".klp.sym.rela.{OBJ56}.y.z,0", None),
        (".klp.sym.vmlinux.printk,0", None),
        ("printk", None),
    ],
    ids=[
        "vmlinux",
        "module-dotted-name",
        "short",
        "missing-sym-obj",
        "empty-sym-obj",
        "no-pos",
        "negative-pos",
        "lp-obj-56",
        "plain-klp",
        "other",
    ],
)
def test_parse_annotation_symbol(s: str, expected: KlpAnnotationName | None) -> None:
    assert parse_annotation_symbol(s) == expected
    if expected is None:
        with pytest.raises(KlpFormatError, match=r"^Invalid format of symbol \("):
            KlpAnnotationName.parse(s)
    else:
        assert KlpAnnotationName.parse(s) == expected
        assert str(expected) == s


def test_annotation_reason() -> None:
    scan = KlpAnnotationName.scan(".klp.sym.rela.x.y,0")
    # %55[^.] takes "y,0" as the symbol object name; then the '.' literal meets the end.
    assert scan.count == 2
    assert scan.reason == "ends after the symbol object name (no '.' follows)"
    assert KlpAnnotationName.scan(".klp.sym.rela.x..z,0").reason == "symbol object name is empty"
    assert KlpAnnotationName.scan(".klp.sym.vmlinux.printk,0").reason == (
        "does not start with '.klp.sym.rela.'"
    )


def test_annotation_to_symbol_name() -> None:
    ann = KlpAnnotationName.parse(".klp.sym.rela.lp.ext4.ext4_attr_store,1")
    assert ann.to_symbol_name() == KlpSymbolName("ext4", "ext4_attr_store", 1)
    assert str(ann.to_symbol_name()) == ".klp.sym.ext4.ext4_attr_store,1"


def test_annotation_kernel_reading() -> None:
    # The kernel's own format reads an unconverted annotation as object "rela".
    ann = KlpAnnotationName.parse(".klp.sym.rela.lp.vmlinux.foo,2")
    reading = ann.kernel_reading()
    assert reading.symbol() == KlpSymbolName("rela", "lp.vmlinux.foo", 2)
    # The kernel's symbol name is "<lp_obj>.<sym_obj>.<sym>": 55 + 1 + 55 + 1 + 15 = 127
    # bytes fits the pre-v6.1 width, one byte more does not.
    fits = KlpAnnotationName(OBJ55, OBJ55, "f" * 15, 0)
    assert fits.kernel_reading(ksym_name_len=KSYM_NAME_LEN_OLD).count == 3
    longer = KlpAnnotationName(OBJ55, OBJ55, "f" * 16, 0)
    assert longer.kernel_reading().count == 3
    assert longer.kernel_reading(ksym_name_len=KSYM_NAME_LEN_OLD).count == 2


@pytest.mark.parametrize(
    ("s", "kind"),
    [
        (".klp.sym.vmlinux.printk,0", "klp"),
        (".klp.sym.vmlinux.foo.isra.0,1", "klp"),
        (".klp.sym.vmlinux.printk,1xyz", "klp"),
        (".klp.sym.rela.x.y.z,0", "annotation"),
        (".klp.sym.rela.lp.vmlinux.foo,2", "annotation"),
        # Not an annotation (three parts only), but the kernel accepts it: "rela", "x.y".
        (".klp.sym.rela.x.y,0", "klp"),
        (".klp.sym.vmlinux.printk", "other"),
        (".klp.sym.vmlinux.printk,-1", "other"),
        ("printk", "other"),
        ("", "other"),
    ],
    ids=[
        "klp",
        "klp-dotted",
        "klp-trailing-junk",
        "annotation",
        "annotation-vmlinux",
        "rela-objname-not-annotation",
        "malformed-no-pos",
        "malformed-negative",
        "plain",
        "empty",
    ],
)
def test_classify_symbol_name(s: str, kind: str) -> None:
    assert classify_symbol_name(s) == kind


def test_classify_uses_ksym_name_len() -> None:
    s = f".klp.sym.vmlinux.{NAME128},0"
    assert classify_symbol_name(s) == "klp"
    assert classify_symbol_name(s, ksym_name_len=KSYM_NAME_LEN_OLD) == "other"


# --- the fast path agrees with the exact scanner ---------------------------------------


_PIECES = st.sampled_from(["vmlinux", "ext4", ".", ",", "foo", "isra", "0", "12", " ", "x" * 60,
                           "9" * 21, "é", "\t", "+", "-", ".klp.sym.", ""])  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(st.lists(_PIECES, max_size=8), st.sampled_from([128, 512]))
def test_fast_path_matches_kernel_sscanf(pieces: list[str], width: int) -> None:
    s = ".klp.sym." + "".join(pieces)
    fast = _scan_canonical(s, width)
    if fast is None:
        return
    exact = kernel_sscanf(_c_string(s), klp_sym_format(width))
    assert exact.count == 3
    obj, name, pos = exact.values
    assert (fast.objname, fast.name, fast.sympos) == (
        obj.decode() if isinstance(obj, bytes) else obj,
        name.decode() if isinstance(name, bytes) else name,
        pos,
    )
    assert _c_string(s)[exact.spans[2][1] :] == b""


def _expected(s: str, width: int) -> tuple[str, str, int] | None:
    # what KlpSymbolName.scan() reads on its fast path, else None
    fast = _scan_canonical(s, width)
    return None if fast is None else (fast.objname or "", fast.name or "", fast.sympos or 0)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.lists(_PIECES, max_size=8), min_size=1, max_size=12),
       st.sampled_from([128, 512]), st.booleans())  # fmt: skip
def test_canonical_names_is_the_fast_path(names: list[list[str]], width: int, lead: bool) -> None:
    # a string table of would-be livepatch names: every offset where a name starts
    # (and every offset inside one, as tail-shared names start) reads as scan() does
    strings = [".klp.sym." + "".join(p) for p in names]
    table = ("\0" if lead else "") + "\0".join(strings) + "\0"
    raw = table.encode("utf-8", "surrogateescape")
    found = canonical_names(raw, width)
    starts = {i + 1 for i, b in enumerate(raw) if b == 0} | {0}
    for off in range(len(raw)):
        end = raw.index(0, off)
        name = raw[off:end].decode("utf-8", "surrogateescape")
        if off in found:
            assert found[off] == _expected(name, width), name
        elif off in starts and off:  # a name after a NUL: found if the fast path reads it
            assert _expected(name, width) is None, name
    assert all(raw[o - 1] == 0 for o in found)


def test_canonical_names_at_the_table_start_and_wrapping_sympos() -> None:
    raw = b".klp.sym.vmlinux.a,0\0.klp.sym.vmlinux.b,1\0.klp.sym.vmlinux.c,%d\0" % (1 << 64)
    # offset 0 has no NUL before it: left to scan(), as a sympos past ULONG_MAX is
    assert canonical_names(raw) == {21: ("vmlinux", "b", 1)}


def test_bad_fields_raise_klp_format_error() -> None:
    # names that the kernel's formats cannot hold: KlpFormatError (a ValueError, so
    # callers catching ValueError keep working)
    from collections.abc import Callable

    from klpelf.klp.names import KlpRelaSectionName

    bad: list[Callable[[], object]] = [
        lambda: KlpSymbolName("a.b", "f", 0),
        lambda: KlpSymbolName("vmlinux", "f,g", 0),
        lambda: KlpSymbolName("vmlinux", "f", -1),
        lambda: KlpRelaSectionName("vmlinux", "text"),
        lambda: KlpRelaSectionName("", ".text"),
    ]
    for make in bad:
        with pytest.raises(KlpFormatError):
            make()


def test_kernel_release_parse_usage_error() -> None:
    from klpelf.errors import UsageError
    from klpelf.release import KernelRelease

    with pytest.raises(UsageError, match="not a kernel release"):
        KernelRelease.parse("vmlinux")
    assert issubclass(UsageError, ValueError)
    assert KernelRelease.parse("6.12.117+deb13-amd64") == KernelRelease(6, 12)
