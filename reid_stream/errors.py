"""The exception that sends an event to the dead-letter topic, and the one the HTTP views answer with."""

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


class ApiError(Exception):
    """A request the views answer with other than 200: HTTP status, a stable error code, and a detail for people
    (a text, or pydantic-style field errors). The operator's modules raise their own subclasses."""

    def __init__(self, status: int, code: str, detail: Any) -> None:
        super().__init__(f"{code}: {detail}")
        self.status, self.code, self.detail = status, code, detail
