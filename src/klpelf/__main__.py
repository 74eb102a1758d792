"""``python -m klpelf``: the same entry point as the ``klpelf`` command."""

from __future__ import annotations

from klpelf.cli import main

raise SystemExit(main())
