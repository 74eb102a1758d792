"""Kernel symbols (kallsyms, System.map, vmlinux, modules, Module.symvers) and the resolver.

:mod:`klpelf.symbols.sources` reads the sources into a :class:`KernelSymbols`;
:mod:`klpelf.symbols.resolve` resolves livepatch symbols against it exactly as
``klp_find_object_symbol()`` does.
"""
