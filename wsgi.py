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
    """Serve with waitress on UNIX_SOCKET (trusting its peer, nginx) or on LISTEN (trusting only
    TRUSTED_PROXY), with THREADS."""
    from waitress import serve as waitress_serve

    unix_socket = os.environ.get("UNIX_SOCKET") or app.config["UNIX_SOCKET"]
    listen = os.environ.get("LISTEN") or app.config["LISTEN"]
    threads = int(os.environ.get("THREADS") or app.config["THREADS"])
    proxy = os.environ.get("TRUSTED_PROXY") or app.config["TRUSTED_PROXY"]
    # Bodies and headers bounded here too: the app's 413 would come after waitress had
    # buffered up to its own default of 1 GB. waitress refuses a body >= its limit, Flask one
    # > MAX_CONTENT_LENGTH: + 1 makes them agree.
    options = {"threads": threads, "ident": "gateway",
               "max_request_body_size": app.config["MAX_CONTENT_LENGTH"] + 1,
               "max_request_header_size": 32 * 1024}
    if unix_socket:
        # The socket alone, no TCP port: only a process that may open the file (nginx's group,
        # mode 660) can connect, so no other local process can claim to be nginx. waitress
        # names every peer of a unix socket "localhost", the one proxy trusted here.
        options.update(unix_socket=unix_socket, unix_socket_perms="660")
        proxy = "localhost"
    else:
        options["listen"] = listen
    if proxy:
        options.update(
            trusted_proxy=proxy, trusted_proxy_count=1,
            trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto"},
            clear_untrusted_proxy_headers=True,
        )
    waitress_serve(app, **options)


if __name__ == "__main__":
    serve()
