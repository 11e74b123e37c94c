"""Bearer tokens for the HTTP API, compared in constant time, and the audit log of entity queries."""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reid_stream.config import ConfigError, Settings

audit_log = logging.getLogger("reid_stream.audit")


@dataclass(frozen=True)
class Token:
    name: str
    secret: bytes


def parse_tokens(entries: list[str], source: str) -> list[Token]:
    tokens = []
    for n, entry in enumerate(entries, 1):
        name, sep, secret = entry.strip().partition(":")
        if not sep:  # a bare token gets a positional name; the secret itself is never logged
            name, secret = f"{source}-{n}", name
        if len(secret) < 16:
            raise ConfigError(f"{source}: token {name!r} is shorter than 16 characters")
        tokens.append(Token(name, secret.encode()))
    return tokens


class Authenticator:
    def __init__(self, tokens: list[Token], required: bool) -> None:
        self.tokens = tokens
        self.required = required

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        tokens = parse_tokens(list(settings.api_tokens), "REID_API_TOKENS")
        if settings.api_token_file:
            try:
                lines = Path(settings.api_token_file).read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"REID_API_TOKEN_FILE={settings.api_token_file!r}: {exc}") from None
            tokens += parse_tokens([ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")],
                                   "REID_API_TOKEN_FILE")
        return cls(tokens, settings.api_auth)

    def identify(self, authorization: str | None) -> str | None:
        """The token's name, or None. Every token is compared, so timing does not reveal which one was close."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        offered = authorization[len("Bearer "):].strip().encode()
        found = None
        for token in self.tokens:
            if hmac.compare_digest(offered, token.secret):
                found = token.name
        return found


class Auditor:
    def __init__(self, enabled: bool, path: str = "") -> None:
        self.enabled = enabled
        self.path = Path(path) if path else None

    def record(self, who: str | None, method: str, route: str, params: dict[str, Any], status: int) -> None:
        if not self.enabled:
            return
        line = json.dumps({"time": datetime.now(UTC).isoformat(), "token": who, "method": method, "route": route,
                           "params": params, "status": status}, default=str)
        if self.path is None:
            audit_log.info(line)
        else:
            with self.path.open("a") as f:
                f.write(line + "\n")
