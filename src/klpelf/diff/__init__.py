"""``klpelf diff``: from two builds of one translation unit, the object that holds what changed.

The steps, one module each: :mod:`~klpelf.diff.objects` (the translation unit's
functions, data and sections, read from one object), :mod:`~klpelf.diff.correlate`
(which symbol of the original is which of the patched build), :mod:`~klpelf.diff.compare`
(position-independent comparison), :mod:`~klpelf.diff.special` (entries of the kernel's
special sections), :mod:`~klpelf.diff.select` (what is included, what is refused),
:mod:`~klpelf.diff.refs` (what the included code's references become) and
:mod:`~klpelf.diff.emit` (the output object).
"""
