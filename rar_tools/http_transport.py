"""Serving MCP over streamable HTTP: the SDK's Starlette app, run by uvicorn with our logging.

- Bearer tokens (`--auth-token-file`, see `http_auth`): without a valid token every request gets 401
  and a `WWW-Authenticate: Bearer` header.
- Host and Origin checks (the SDK's DNS-rebinding protection): a server bound to a local address
  accepts the local Host and Origin values, plus `--allowed-hosts` / `--allowed-origins`, which is
  what a reverse proxy that forwards its own Host needs (otherwise: 421 Invalid Host header).
- Request bodies over `--http-max-request-bytes` get 413.
- uvicorn logs (its access log included) through our logging configuration, to stderr: its own
  default configuration writes the access log to stdout.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

if TYPE_CHECKING:
    from rar_tools.settings import Settings

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
LOCAL_HOST_HEADERS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
LOCAL_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def transport_security(settings: Settings) -> TransportSecuritySettings | None:
    """Host/Origin checks: the local values for a local bind, plus the allowed hosts and origins;
    None (no check, as the SDK does) for a non-local bind without `--allowed-hosts`."""
    local = settings.host in LOCAL_HOSTS
    if not local and not settings.allowed_hosts:
        return None
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=(LOCAL_HOST_HEADERS if local else []) + list(settings.allowed_hosts),
        allowed_origins=(LOCAL_ORIGINS if local else []) + list(settings.allowed_origins),
    )


def serve_http(server: MCPServer, settings: Settings) -> None:
    """Serve `server` at http://HOST:PORT/mcp until interrupted."""
    import uvicorn

    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        max_request_body_size=settings.http_max_request_bytes,
        transport_security=transport_security(settings),
        host=settings.host,
    )
    for name in UVICORN_LOGGERS:  # no handlers of their own: they reach our stderr handler
        logging.getLogger(name).setLevel(settings.log_level)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, access_log=True)
    auth = "bearer tokens required" if settings.auth_token_file else "no authentication"
    log.info("serving MCP over streamable HTTP at http://%s:%d/mcp (%s)", settings.host, settings.port, auth)
    anyio.run(uvicorn.Server(config).serve)
