"""The API's front door, as pure ASGI middleware: it runs before FastAPI parses anything.

* A route that needs a key gets it checked from the headers alone; a request without a valid
  key is answered 401 before one byte of its body is read (FastAPI reads and spools a multipart
  body before it resolves the endpoint's dependencies).
* Body bytes are counted as they stream in, so a chunked upload (no Content-Length) is cut off
  at the limit instead of being spooled to disk whole; a declared length over it is refused
  at once.
* Every response carries security headers (no framing, no sniffing, no referrer, no caching of
  results; a strict content policy except on the interactive docs, which load Swagger UI).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from anyio import to_thread

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Headers on every response. HSTS belongs to the TLS proxy in front (see the deployment docs).
SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}
#: JSON answers need nothing from anywhere; /docs loads Swagger UI's files from its CDN.
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")
DOCS_PATHS = ("/docs", "/redoc")


class _TooLarge(Exception):
    """Raised inside ``receive`` once the body passes the limit."""


class RequestGuard:
    """ASGI middleware: key check before the body, streamed byte count, security headers.

    ``needs_key(path)`` says which paths require a key; ``authenticate(authorization_header)``
    returns the user or raises, and ``refusal(exc)`` turns that into (status, message, headers).
    The user lands in ``scope["state"]["api_user"]`` for the endpoint.
    """

    def __init__(self, app: ASGIApp, *, needs_key: Callable[[str], bool],
                 authenticate: Callable[[str | None], Any],
                 refusal: Callable[[Exception], tuple[int, str, dict[str, str]]],
                 max_body: int, too_large: Callable[[int | None], str]) -> None:
        self.app, self.needs_key, self.authenticate, self.refusal = app, needs_key, authenticate, refusal
        self.max_body, self.too_large = max_body, too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_headers(scope, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            await _json(send, 413, self.too_large(int(length)))
            return
        if self.needs_key(scope.get("path", "")):
            try:
                # A database lookup: off the event loop, like FastAPI's sync dependencies.
                user = await to_thread.run_sync(self.authenticate, headers.get("authorization"))
            except Exception as exc:  # noqa: BLE001  (refusal() decides what each error means)
                status, message, extra = self.refusal(exc)
                await _json(send, status, message, extra)
                return
            scope.setdefault("state", {})["api_user"] = user
        await self._counted(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        received, started, over = 0, False, False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    over = True
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if over:  # whatever the framework made of the cut-off body, the answer is 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if not over:  # _TooLarge, or whatever the framework wrapped it in
                raise
        if over and not started:
            await _json(send, 413, self.too_large(None))

    @staticmethod
    def _with_headers(scope: Scope, send: Send) -> Send:
        csp = DOCS_CSP if scope.get("path", "").startswith(DOCS_PATHS) else STRICT_CSP
        extra = [(k.encode(), v.encode()) for k, v in {**SECURITY_HEADERS, "content-security-policy": csp}.items()]
        api = scope.get("path", "").startswith("/v1/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                added = [(k, v) for k, v in extra if k not in names]
                if api and b"cache-control" not in names:
                    added.append((b"cache-control", b"no-store"))  # results are patient data
                message = {**message, "headers": list(message.get("headers", [])) + added}
            await send(message)

        return send_with_headers


async def _json(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
