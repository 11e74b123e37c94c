"""The one exception type that sends an event to the dead-letter topic."""

from __future__ import annotations

from typing import Any


class DetectionError(Exception):
    """A detection that cannot be processed: a machine-readable code, a message and the failing stage."""

    def __init__(self, code: str, message: str, stage: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.stage = stage
        self.details = details
