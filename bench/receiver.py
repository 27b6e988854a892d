"""A local billing receiver: answers 204 and logs "<order_id> <arrival>" per call to a file.

Arrival is time.perf_counter(), CLOCK_MONOTONIC on Linux, the same clock in every process,
so the benchmark can subtract the time it saw the callback's 200 from it.
`LISTEN=127.0.0.1:PORT python bench/receiver.py LOGFILE`
"""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(port, log_path):
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real billing endpoint would allow

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            arrived = time.perf_counter()
            order_id = json.loads(body)["data"]["order_id"]
            log.write(f"{order_id} {arrived:.6f}\n")
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main(int(os.environ["LISTEN"].rsplit(":", 1)[1]), sys.argv[1])
