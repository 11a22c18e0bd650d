"""Bearer tokens for the HTTP transport, through the MCP SDK's auth support (`TokenVerifier`).

The token file (`--auth-token-file`) holds no token, only the SHA-256 of each, one per line:

    sha256:3f2a...e9            a token that may call every tool
    sha256:77c0...1b read-only  a token that may call only the read-only tools

(`#` starts a comment.) `rar-tools token --auth-token-file FILE [--read-only]` makes a random token,
appends its line and prints the token once. A request's token is hashed and compared with every
line in constant time (`hmac.compare_digest`); tokens are random 256-bit strings, so a plain SHA-256
suffices (no password hashing needed). Without a valid token the SDK answers 401 with a
`WWW-Authenticate: Bearer` header. A read-only token carries only the `READ_SCOPE`; the server
refuses the tools that change memories for it (`refuse_read_only_token`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from rar_tools.errors import RarToolsError

READ_SCOPE = "rar-tools:read"
WRITE_SCOPE = "rar-tools:write"
PREFIX = "sha256:"
READ_ONLY = "read-only"


@dataclass(frozen=True)
class TokenHash:
    """One line of the token file: the digest of an accepted token and whether it is read-only."""

    digest: bytes
    read_only: bool
    line: int


def token_line(token: str, read_only: bool) -> str:
    """The token file's line for `token`."""
    return PREFIX + hashlib.sha256(token.encode()).hexdigest() + (f" {READ_ONLY}" if read_only else "")


def read_token_file(path: Path) -> list[TokenHash]:
    """The accepted token hashes in `path`; a malformed line or an empty file is refused by name."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RarToolsError(f"cannot read the token file {str(path)!r}: {exc.strerror or exc}") from exc
    hashes = []
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        digest = words[0].removeprefix(PREFIX)
        valid = words[0].startswith(PREFIX) and len(digest) == 64 and words[1:] in ([], [READ_ONLY])
        if not valid or any(c not in "0123456789abcdef" for c in digest):
            raise RarToolsError(
                f"{path}:{number}: expected 'sha256:<64 hex digits>' optionally followed by 'read-only' "
                "(make lines with `rar-tools token`; the file holds hashes, never tokens)"
            )
        hashes.append(TokenHash(bytes.fromhex(digest), words[1:] == [READ_ONLY], number))
    if not hashes:
        raise RarToolsError(f"the token file {str(path)!r} lists no token: add one with `rar-tools token`")
    return hashes


class HashedTokenVerifier:
    """A `TokenVerifier` accepting the tokens whose SHA-256 is in the token file."""

    def __init__(self, hashes: list[TokenHash]) -> None:
        self.hashes = hashes

    async def verify_token(self, token: str) -> AccessToken | None:
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found = None
        for entry in self.hashes:  # every line is compared, so the time does not tell which matched
            if hmac.compare_digest(digest, entry.digest):
                found = entry
        if found is None:
            return None
        scopes = [READ_SCOPE] if found.read_only else [READ_SCOPE, WRITE_SCOPE]
        return AccessToken(token=PREFIX + digest.hex()[:12], client_id=f"token-line-{found.line}", scopes=scopes)


def auth_settings(host: str, port: int) -> AuthSettings:
    """The SDK's auth settings for a resource server that checks its own bearer tokens: every request
    must carry a token with at least the read scope."""
    return AuthSettings(issuer_url=f"http://{host}:{port}", resource_server_url=None, required_scopes=[READ_SCOPE])


def refuse_read_only_token(tool: str, read_only_tool: bool) -> None:
    """Refuse a tool that changes memories to a request authenticated with a read-only token (over
    stdio, or without token auth, there is no token and nothing is refused)."""
    token = get_access_token()
    if token is not None and not read_only_tool and WRITE_SCOPE not in token.scopes:
        raise RarToolsError(
            f"this bearer token is read-only: it may call only read-only tools, and {tool} changes memories"
        )


def create_token(path: Path, read_only: bool) -> str:
    """A new random token: its hash line is appended to the token file (created private), the token returned."""
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(token_line(token, read_only) + "\n")
    return token
