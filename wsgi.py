"""The WSGI entry point: `python wsgi.py` serves the gateway with waitress."""

import os
import sys

from gateway import create_app
from gateway.errors import ConfigError

try:
    app = create_app()
except ConfigError as exc:  # one sentence for ops, not a traceback
    sys.exit(f"gateway: refusing to start: {exc}")


def serve():
    """Serve with waitress on LISTEN with THREADS, believing only TRUSTED_PROXY's headers."""
    from waitress import serve as waitress_serve

    listen = os.environ.get("LISTEN") or app.config["LISTEN"]
    threads = int(os.environ.get("THREADS") or app.config["THREADS"])
    proxy = os.environ.get("TRUSTED_PROXY") or app.config["TRUSTED_PROXY"]
    # Bodies and headers bounded here too: the app's 413 would come after waitress had
    # buffered up to its own default of 1 GB. waitress refuses a body >= its limit, Flask one
    # > MAX_CONTENT_LENGTH: + 1 makes them agree.
    options = {"listen": listen, "threads": threads, "ident": "gateway",
               "max_request_body_size": app.config["MAX_CONTENT_LENGTH"] + 1,
               "max_request_header_size": 32 * 1024}
    if proxy:
        options.update(
            trusted_proxy=proxy, trusted_proxy_count=1,
            trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto"},
            clear_untrusted_proxy_headers=True,
        )
    waitress_serve(app, **options)


if __name__ == "__main__":
    serve()
