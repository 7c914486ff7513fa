"""``maillage webhooks receive``: a partner's webhook receiver on this machine, for development.

It listens on loopback, verifies every delivery's Standard Webhooks signature with the official
``standardwebhooks`` library (an implementation independent of the notifications service's own
signing code) and prints one line per delivery: ``verified``, with the event's type and data,
or ``refused`` with why. A verified delivery is answered 204, a refused one 401, which the
service's delivery log then shows. ``maillage dev --local-webhooks`` lets partners subscribe such
a receiver (http, loopback); nothing here is meant for production.
"""

from __future__ import annotations

import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated, Any

import typer
from standardwebhooks import Webhook, WebhookVerificationError

MAX_BODY_BYTES = 1024 * 1024  # a delivery is one event: far below this

app = typer.Typer(help="Webhooks on this machine (development).", no_args_is_help=True)


@app.callback()
def webhooks() -> None:
    """Webhooks on this machine (development)."""


@app.command("receive")
def receive(
    secret: Annotated[
        str,
        typer.Option(
            envvar="WEBHOOK_SECRET",
            help="The endpoint's whsec_ secret, shown once when it was subscribed.",
            show_default=False,
        ),
    ],
    port: Annotated[int, typer.Option(help="Port to listen on, on 127.0.0.1.")] = 9000,
) -> None:
    """Receive webhooks on http://127.0.0.1:PORT/ (any path), verify each signature, print it."""
    try:
        if not secret.startswith("whsec_"):
            raise ValueError("it does not start with whsec_")
        verifier = Webhook(secret)
    except Exception as error:  # the library raises bare errors on a malformed secret
        raise typer.BadParameter(
            f"not the endpoint's whsec_ secret: {error}", param_hint="--secret"
        ) from None
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(verifier))
    # Ctrl-C and SIGTERM stop it even when started with SIGINT ignored (a background job of a
    # non-interactive shell inherits SIG_IGN, and Python then installs no KeyboardInterrupt).
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _interrupt)
    try:
        typer.echo(f"receiving webhooks on http://127.0.0.1:{server.server_port}/ (Ctrl-C stops)")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _handler(verifier: Webhook) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY_BYTES:
                self._answer(413, f"refused: a body of {length} bytes")
                return
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                event: Any = verifier.verify(body, headers)
            except (WebhookVerificationError, ValueError) as error:
                self._answer(401, f"refused {headers.get('webhook-id', '-')}: {error}")
                return
            self._answer(204, f"verified {headers['webhook-id']} {_summary(event)}")

        def _answer(self, status: int, line: str) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            print(f"{self.path}: {line}", flush=True)

        def log_message(self, format: str, *args: Any) -> None:
            """Our one line per delivery replaces the standard access log."""

    return Handler


def _summary(event: Any) -> str:
    if not isinstance(event, dict):
        return json.dumps(event)[:200]
    data = json.dumps(event.get("data"), ensure_ascii=False, separators=(",", ":"))
    return f"{event.get('type')} {data[:300]}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
