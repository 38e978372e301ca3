"""API keys: ``Authorization: Bearer <key>`` on every protected route, as one FastAPI dependency.

Every route that spends compute (``/solve``, streaming, the OpenAI-compatible routes) takes ``AuthDep`` (or
``Depends(require_api_key)``); ``/healthz`` and ``/readyz`` do not. With no key configured the gateway is open
and the principal is ``anonymous``. Keys are held only as SHA-256 digests and compared in constant time; neither
a key nor its digest is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from atomthink.errors import Unauthorized
from atomthink.settings import Settings

ANONYMOUS = "anonymous"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HASHED = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the configured name of its key (``anonymous`` when keys are off)."""

    name: str


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """Named SHA-256 digests of the configured keys."""

    def __init__(self, digests: dict[str, bytes]) -> None:
        self._digests = list(digests.items())

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._digests]

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        digests: dict[str, bytes] = {}
        for name, secret in settings.api_keys.items():
            digests[_checked_name(name)] = digest(secret.get_secret_value())
        if settings.api_keys_file is not None:
            digests.update(read_key_file(settings.api_keys_file))
        for name, value in digests.items():
            if list(digests.values()).count(value) > 1:
                raise ValueError(f"API key {name!r} has the same key as another name")
        return cls(digests)

    def identify(self, key: str) -> Principal | None:
        """The key's principal, or None. Compares against every digest (no early exit), so the time taken does not
        tell which key, or which prefix of one, came close."""
        presented = digest(key)
        found: str | None = None
        for name, expected in self._digests:
            if hmac.compare_digest(presented, expected):
                found = name
        return Principal(found) if found is not None else None


def read_key_file(path: Path) -> dict[str, bytes]:
    """``NAME KEY`` or ``NAME sha256:HEX`` per line; errors name the line, never its key."""
    digests: dict[str, bytes] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected 'NAME KEY' or 'NAME sha256:HEX'")
        name, value = _checked_name(parts[0], f"{path}:{number}: "), parts[1]
        hashed = _HASHED.match(value)
        digests[name] = bytes.fromhex(hashed.group(1)) if hashed else digest(value)
    return digests


def _checked_name(name: str, where: str = "") -> str:
    if not _NAME.match(name):
        raise ValueError(f"{where}API key names are 1-64 characters of letters, digits, '_', '.', '-'")
    return name


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_request(keys: KeyRing, request: Request) -> Principal:
    """The request's principal; ``Unauthorized`` (401) for a missing or unknown key when keys are on."""
    if not keys.enabled:
        return Principal(ANONYMOUS)
    token = bearer_token(request)
    principal = keys.identify(token) if token is not None else None
    if principal is None:
        raise Unauthorized("a valid API key is required: send 'Authorization: Bearer <key>'")
    return principal


_bearer = HTTPBearer(auto_error=False, description="An API key configured in the gateway's settings.")


def require_api_key(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None
) -> Principal:
    """FastAPI dependency for protected routes (the key ring lives on ``app.state.keys``); the ``HTTPBearer``
    parameter only documents the scheme in the OpenAPI schema, the header is read by ``check_request``."""
    keys: KeyRing = request.app.state.keys
    return check_request(keys, request)


AuthDep = Annotated[Principal, Depends(require_api_key)]
