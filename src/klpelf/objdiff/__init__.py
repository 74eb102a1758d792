"""``klpelf diff``: from two builds of one translation unit, the object that holds what changed.

The steps, one module each: :mod:`~klpelf.objdiff.objects` (the translation unit's
functions, data and sections, read from one object), :mod:`~klpelf.objdiff.correlate`
(which symbol of the original is which of the patched build), :mod:`~klpelf.objdiff.compare`
(position-independent comparison), :mod:`~klpelf.objdiff.special` (entries of the kernel's
special sections), :mod:`~klpelf.objdiff.select` (what is included, what is refused),
:mod:`~klpelf.objdiff.refs` (what the included code's references become) and
:mod:`~klpelf.objdiff.emit` (the output object).
"""
