"""``klpelf diff``: from two builds of one translation unit, the object that holds what changed.

The steps, one module each: :mod:`~klpelf.objdiff.objects` (the translation unit's
functions, data and sections, read from one object), :mod:`~klpelf.objdiff.correlate`
(which symbol of the original is which of the patched build),
:mod:`~klpelf.objdiff.compare` (position-independent comparison),
:mod:`~klpelf.objdiff.special` (entries of the kernel's special sections),
:mod:`~klpelf.objdiff.select` (what is included, what is refused),
:mod:`~klpelf.objdiff.refs` (what the included code's references become),
:mod:`~klpelf.objdiff.emit` (the output object) and
:mod:`~klpelf.objdiff.module_source` (the patch module's C and Kbuild around it).
The package is not named ``diff``: that is the verb's name in the ``klpelf`` facade
(:func:`klpelf.diff`), which a subpackage of that name would replace once imported.
"""
