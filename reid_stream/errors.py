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


class DimensionMismatch(ValueError):
    """A vector whose length is not the dimension of the vectors stored for its model: comparing them would give a
    score that means nothing (a row of 16 float32 numbers has the bytes of 32 float16 ones)."""

    def __init__(self, given: int, stored: int, model: str = "") -> None:
        of = f"model {model!r}" if model else "the model"
        super().__init__(f"dimension mismatch: a vector of {given} numbers against {of}'s stored vectors of "
                         f"{stored} numbers")
        self.given, self.stored, self.model = given, stored, model

    def as_detection_error(self) -> DetectionError:
        """The dead letter's reason, when a detection's vector is the one that does not fit."""
        return DetectionError("dimension_mismatch", str(self), "assign")


class StoreUnavailable(Exception):
    """Redis did not answer: nothing was read or written. The Python API raises it (chained to redis-py's error)
    where an empty answer would be mistaken for "not there"."""
