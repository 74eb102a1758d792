"""Kernel symbols (kallsyms, System.map, vmlinux, modules, Module.symvers) and the resolver.

:mod:`klpelf.symbols.sources` reads the sources into a :class:`KernelSymbols`;
:mod:`klpelf.symbols.resolve` resolves one livepatch symbol, given as (objname, name,
sympos), against it exactly as ``klp_find_object_symbol()`` does.

This package knows kernel symbols, not livepatch modules: it never imports
:mod:`klpelf.klp` (tests/unit/test_layering.py).  Resolving every symbol of a module
is :mod:`klpelf.operations.resolve`'s, which combines the two.
"""
