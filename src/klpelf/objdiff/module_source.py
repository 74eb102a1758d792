"""The patch module around a diff object: C declarations and a Kbuild file for kbuild.

The C file declares what kernel/livepatch/core.c walks (include/linux/livepatch.h):
one ``struct klp_func`` per replaced function (``old_name``, ``new_func``,
``old_sympos``), one ``struct klp_object`` for the patched object (``name`` NULL for
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


def patch_source(name: str, objname: str, funcs: list[tuple[str, int, str]], *,
                 replace: bool = True) -> str:  # fmt: skip
    """The C source of livepatch module ``name`` replacing ``funcs`` ((old_name,
    old_sympos, new symbol)) in ``objname``."""
    lines = [
        "// SPDX-License-Identifier: GPL-2.0",
        f"/* Livepatch module {name}, written by klpelf diff: the new code is in the diff",
        " * object this module is linked with. */",
        "#include <linux/module.h>",
        "#include <linux/kernel.h>",
        "#include <linux/livepatch.h>",
        "",
    ]
    for i, (_, _, new) in enumerate(funcs):
        lines.append(f"extern void klpelf_new_func_{i}(void) __asm__({_c_string(new)});")
    lines += ["", "static struct klp_func funcs[] = {"]
    for i, (old, pos, _) in enumerate(funcs):
        lines.append(f"\t{{ .old_name = {_c_string(old)}, .new_func = klpelf_new_func_{i}, "
                     f".old_sympos = {pos} }},")  # fmt: skip
    obj = "NULL" if objname == "vmlinux" else _c_string(objname)
    lines += [
        "\t{ }",
        "};",
        "",
        "static struct klp_object objs[] = {",
        f"\t{{ .name = {obj}, .funcs = funcs }},",
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


def kbuild_file(name: str, diff_object: str) -> str:
    """The Kbuild file linking ``<name>_patch.o`` and the diff object into ``<name>.ko``."""
    return (f"obj-m := {name}.o\n{name}-y := {name}_patch.o {diff_object}\n"
            "# the .klp.sym. annotations are undefined until klpelf convert\n"
            "KBUILD_MODPOST_WARN := 1\n")  # fmt: skip
