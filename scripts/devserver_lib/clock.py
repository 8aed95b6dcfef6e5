"""The server's clock. Everything that tells or checks the time (the Date
header, token expiry, run and record timestamps) reads it here, so that a
test can run the server with a skewed clock (--clock-offset) and see what a
client minting tokens on its own clock would see against a real server
whose clock differs."""

from __future__ import annotations

import time
from email.utils import formatdate

_offset = 0.0


def set_offset(seconds: float) -> None:
    global _offset
    _offset = float(seconds)


def now() -> float:
    """Unix time in seconds, as the server believes it."""
    return time.time() + _offset


def now_ms() -> int:
    return int(now() * 1000)


def http_date() -> str:
    """The Date header for now()."""
    return formatdate(now(), usegmt=True)
