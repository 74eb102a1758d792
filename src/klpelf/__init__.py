"""klpelf: read, check, resolve and write Linux kernel livepatch modules."""

from __future__ import annotations

__version__ = "0.1.0"
