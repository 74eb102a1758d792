"""The patch module around a diff object: C declarations and a Kbuild file for kbuild.

The C file declares what kernel/livepatch/core.c walks (include/linux/livepatch.h):
one ``struct klp_func`` per replaced function (``old_name``, ``new_func``,
``old_sympos``), one ``struct klp_object`` per patched object (``name`` NULL for
vmlinux), the ``struct klp_patch`` (``replace`` on unless asked otherwise) and the
module init that calls ``klp_enable_patch()``, as samples/livepatch/livepatch-sample.c
does.  The new code is named by its ``__klpelf_new_*`` alias in the diff object.
The Kbuild file links the two; modpost's undefined-symbol errors for the ``.klp.sym.``
annotations are warnings (KBUILD_MODPOST_WARN), and ``klpelf convert`` finishes the
module.
"""

from __future__ import annotations

__all__ = ["kbuild_file", "patch_source"]


def _c_string(s: str) -> str:
    out = s.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{out}"'


def patch_source(name: str, objects: dict[str, list[tuple[str, int, str]]], *,
                 replace: bool = True) -> str:  # fmt: skip
    """The C source of livepatch module ``name``: for each patched object (``vmlinux``
    or a module name), the functions it replaces ((old_name, old_sympos, new symbol))."""
    lines = [
        "// SPDX-License-Identifier: GPL-2.0",
        f"/* Livepatch module {name}, written by klpelf diff: the new code is in the diff",
        " * objects this module is linked with. */",
        "#include <linux/module.h>",
        "#include <linux/kernel.h>",
        "#include <linux/livepatch.h>",
        "",
    ]
    n = 0
    tables = []
    for k, (_, funcs) in enumerate(sorted(objects.items())):
        entries = []
        for old, pos, new in funcs:
            lines.append(f"extern void klpelf_new_func_{n}(void) __asm__({_c_string(new)});")
            entries.append(f"\t{{ .old_name = {_c_string(old)}, .new_func = klpelf_new_func_{n}, "
                           f".old_sympos = {pos} }},")  # fmt: skip
            n += 1
        tables += ["", f"static struct klp_func funcs_{k}[] = {{", *entries, "\t{ }", "};"]
    lines += tables
    lines += ["", "static struct klp_object objs[] = {"]
    for k, objname in enumerate(sorted(objects)):
        obj = "NULL" if objname == "vmlinux" else _c_string(objname)
        lines.append(f"\t{{ .name = {obj}, .funcs = funcs_{k} }},")
    lines += [
        "\t{ }",
        "};",
        "",
        "static struct klp_patch patch = {",
        "\t.mod = THIS_MODULE,",
        "\t.objs = objs,",
        f"\t.replace = {'true' if replace else 'false'},",
        "};",
        "",
        "static int __init livepatch_init(void)",
        "{",
        "\treturn klp_enable_patch(&patch);",
        "}",
        "",
        "static void __exit livepatch_exit(void)",
        "{",
        "}",
        "",
        "module_init(livepatch_init);",
        "module_exit(livepatch_exit);",
        'MODULE_LICENSE("GPL");',
        'MODULE_INFO(livepatch, "Y");',
        "",
    ]
    return "\n".join(lines)


def kbuild_file(name: str, diff_objects: list[str]) -> str:
    """The Kbuild file linking ``<name>_patch.o`` and the diff objects into ``<name>.ko``."""
    return (f"obj-m := {name}.o\n{name}-y := {name}_patch.o {' '.join(diff_objects)}\n"
            "# the .klp.sym. annotations are undefined until klpelf convert\n"
            "KBUILD_MODPOST_WARN := 1\n")  # fmt: skip
