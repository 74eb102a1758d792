"""The verbs of klpelf, as functions: what the command line runs and library users call.

One module per verb (:mod:`~klpelf.operations.show`, :mod:`~klpelf.operations.check`,
:mod:`~klpelf.operations.resolve`, :mod:`~klpelf.operations.convert`).  Each takes a
path or an :class:`~klpelf.elf.file.ElfFile` and the options, and returns a typed
result that produces the verb's JSON form (the TypedDicts of its schema in
docs/json.md, defined in that module and nowhere else) and its text form: the CLI
(:mod:`klpelf.cli`) parses arguments, calls the verb, prints and picks the exit
status, and nothing more.

Every failure is a :class:`~klpelf.errors.KlpError` whose message names the file.

Layering: ``cli -> operations -> {klp, symbols, arch} -> elf -> base``; this package
is the only one above klp/ and symbols/ that combines them (a livepatch module's
symbols resolved against kernel symbols).
"""
