"""klpelf: read, check, resolve and write Linux kernel livepatch modules.

No dataclasses on the import path of the commands: ``import dataclasses`` (inspect,
ast, tokenize, dis) and the ``exec`` behind each ``@dataclass`` cost ~17 ms of a
~65 ms ``klpelf check``.  Records are ``typing.NamedTuple`` classes, or plain
``__slots__`` classes on :mod:`klpelf._record`'s bases.
"""

from __future__ import annotations

__version__ = "0.1.0"
