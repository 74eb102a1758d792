"""klpelf.klp.patch: what a livepatch replaces, decoded from the three producers' data."""

from __future__ import annotations

from pathlib import Path

import pytest

from klpelf.cli import main
from klpelf.elf.reader import open_elf
from klpelf.klp.patch import KlpState, decode_patches
from toolchain import TARGETS, assemble

X86 = TARGETS[0]

_FUNCS = """
    .text
    .type new_a,@function
new_a: nop
    ret
    .size new_a, 2
    .type new_b,@function
new_b: ret
    .size new_b, 1
    .type new_c,@function
new_c: nop
    nop
    ret
    .size new_c, 3
    .type pre,@function
pre: ret
    .size pre, 1
    .type post_un,@function
post_un: ret
    .size post_un, 1
"""

# struct klp_patch in .data, as a hand-written module has it; the internal fields of
# klp_func (7 words here) and klp_object (10 words) are config-dependent: the decoder
# must take the strides from the array symbols' sizes, not from a sizeof.
HAND_WRITTEN = (
    _FUNCS
    + """
    .section .rodata.str1.1,"aMS",@progbits,1
s_a: .string "func_a"
s_b: .string "func_b"
s_mod: .string "ext4"
s_c: .string "func_c"
    .data
    .type funcs_vm,@object
funcs_vm:
    .quad s_a, new_a, 0, 0, 0, 0, 0
    .quad s_b, new_b, 2, 0, 0, 0, 0
    .zero 56
    .size funcs_vm, 168
    .type funcs_mod,@object
funcs_mod:
    .quad s_c, new_c, 3, 0, 0, 0, 0
    .zero 56
    .size funcs_mod, 112
    .type objs,@object
objs:
    .quad 0, funcs_vm, pre, 0, 0, post_un, 0, 0, 0, 0
    .quad s_mod, funcs_mod, 0, 0, 0, 0, 0, 0, 0, 0
    .zero 80
    .size objs, 240
    .type states,@object
states:
    .quad 7
    .long 2, 0
    .quad 0
    .quad 9
    .long 1, 0
    .quad 0
    .zero 24
    .size states, 72
    .type patch,@object
patch:
    .quad __this_module, objs, states
    .byte 1
    .zero 39
    .size patch, 64
"""
)

# struct kpatch_patch_func { new_addr, new_size, old_addr, old_size, sympos, name,
# objname } and struct kpatch_pre_patch_callback { callback, objname }
KPATCH = (
    _FUNCS
    + """
    .section .kpatch.strings,"aMS",@progbits,1
k_a: .string "func_a"
k_c: .string "func_c"
k_vm: .string "vmlinux"
k_mod: .string "ext4"
    .section .kpatch.funcs,"aw"
    .quad new_a, 2, 0, 0, 1, k_a, k_vm
    .quad new_c, 3, 0, 0, 3, k_c, k_mod
    .section .kpatch.callbacks.pre_patch,"aw"
    .quad pre, k_mod
"""
)

# struct klp_object_ext { name, funcs, klp_callbacks (40 bytes), nr_funcs } and
# struct klp_func_ext { old_name, new_func, sympos } (include/linux/livepatch_external.h)
KLP_BUILD = (
    _FUNCS
    + """
    .section .rodata.klp.str1.1,"aMS",@progbits,1
b_a: .string "func_a"
b_b: .string "func_b"
b_c: .string "func_c"
b_mod: .string "ext4"
    .section {funcs},"aw"
fx_vm:
    .quad b_a, new_a, 0
    .quad b_b, new_b, 2
fx_mod:
    .quad b_c, new_c, 3
    .section {objs},"aw"
    .quad 0, fx_vm, 0, 0, 0, 0, 0
    .long 2, 0
    .quad b_mod, fx_mod, pre, 0, 0, post_un, 0
    .long 1, 0
"""
)


def _decoded(
    tmp_path: Path, source: str
) -> list[tuple[str, list[tuple[str | None, int, str, int]], dict[str, str]]]:
    (p,) = decode_patches(open_elf(assemble(X86, tmp_path / "m.o", source)))
    return [
        (
            o.objname,
            [
                (
                    f.old_name,
                    f.old_sympos,
                    f.new_func.name if f.new_func else "",
                    f.new_func.size if f.new_func else -1,
                )
                for f in o.funcs
            ],
            o.callbacks,
        )
        for o in p.objects
    ]


EXPECTED = [
    (
        "vmlinux",
        [("func_a", 0, "new_a", 2), ("func_b", 2, "new_b", 1)],
        {"pre_patch": "pre", "post_unpatch": "post_un"},
    ),
    ("ext4", [("func_c", 3, "new_c", 3)], {}),
]


def test_hand_written_klp_patch(tmp_path: Path) -> None:
    assert _decoded(tmp_path, HAND_WRITTEN) == EXPECTED
    (p,) = decode_patches(open_elf(tmp_path / "m.o"))
    assert p.style == "klp_patch" and p.where == "patch"
    assert p.states == [KlpState(7, 2), KlpState(9, 1)] and p.replace is True
    assert p.notes == ["no vermagic: klp_patch read with the v5.5+ layout"]


def test_kpatch_funcs(tmp_path: Path) -> None:
    assert _decoded(tmp_path, KPATCH) == [
        ("vmlinux", [("func_a", 1, "new_a", 2)], {}),
        ("ext4", [("func_c", 3, "new_c", 3)], {"pre_patch": "pre"}),
    ]
    (p,) = decode_patches(open_elf(tmp_path / "m.o"))
    assert p.style == "kpatch" and p.replace is None and p.notes


@pytest.mark.parametrize(
    ("objs", "funcs"), [("__klp_objects", "__klp_funcs"), (".init.klp_objects", ".init.klp_funcs")]
)
def test_klp_build_descriptors(tmp_path: Path, objs: str, funcs: str) -> None:
    decoded = _decoded(tmp_path, KLP_BUILD.format(objs=objs, funcs=funcs))
    assert decoded == [
        ("vmlinux", EXPECTED[0][1], {}),
        ("ext4", EXPECTED[1][1], {"pre_patch": "pre", "post_unpatch": "post_un"}),
    ]
    (p,) = decode_patches(open_elf(tmp_path / "m.o"))
    assert p.style == "klp-build" and p.where == objs and p.replace is None


def test_no_patch_in_an_ordinary_object(tmp_path: Path) -> None:
    assert decode_patches(open_elf(assemble(X86, tmp_path / "m.o"))) == []


def test_show_lists_the_replaced_functions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = assemble(X86, tmp_path / "m.o", HAND_WRITTEN)
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.endswith(
        "  klp_patch patch: replace yes\n"
        "    object vmlinux: 2 functions\n"
        "      func_a,0 -> new_a (2 bytes)\n"
        "      func_b,2 -> new_b (1 bytes)\n"
        "      callback pre_patch: pre\n"
        "      callback post_unpatch: post_un\n"
        "    object ext4: 1 function\n"
        "      func_c,3 -> new_c (3 bytes)\n"
        "    states: id 7 version 2, id 9 version 1\n"
        "    note: no vermagic: klp_patch read with the v5.5+ layout\n"
    )
