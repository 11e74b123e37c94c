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

    def __reduce__(self) -> tuple[type[DetectionError], tuple[str, str, str, list[dict[str, Any]] | None]]:
        # Crosses process boundaries (the decode pool) whole; Exception's default pickling would not.
        return DetectionError, (self.code, self.message, self.stage, self.details)
