"""Output streams (streams v2): the PUT a task's streams.writer starts with,
and the S2-compatible append endpoint the X-S2-Endpoint it is handed
points at (this server itself)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .api import Api


class OutputRoutes:
    def __init__(self, api: "Api"):
        self.api = api

    def routes(self) -> list:
        return []
