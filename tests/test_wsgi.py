"""How ops run it: python wsgi.py and waitress-serve, with and without a trusted proxy."""

import os
import runpy
import sys

import pytest
import requests
from conftest import ROOT, LiveServer

from gateway import chronopay

pytestmark = pytest.mark.slow
SANDBOX = runpy.run_path(os.path.join(ROOT, "config.sandbox.py"))
CHRONOPAY_IP = "93.174.51.230"


def callback_from(server, forwarded_for):
    fields = {"transaction_type": "Purchase", "transaction_id": "1", "customer_id": "c",
              "total": "1.00", "order_id": "nope"}
    fields["sign"] = chronopay.callback_sign(SANDBOX["CHRONOPAY_SHARED_SECRET"], "c", "1",
                                             "Purchase", "1.00")
    headers = {"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": "https"}
    return requests.post(server.url + "/chronopay/callback", data=fields, headers=headers,
                         timeout=10)


@pytest.mark.parametrize("proxy, forwarded_for, status", [
    ("127.0.0.1", CHRONOPAY_IP, 200),      # nginx on loopback vouches for ChronoPay
    ("127.0.0.1", "10.0.0.1", 403),        # nginx says someone else
    (None, CHRONOPAY_IP, 403),             # no trusted proxy: the header is not believed
    ("10.9.9.9", CHRONOPAY_IP, 403),       # the header came from a peer that is not the proxy
])
def test_callback_allowlist_sees_the_client_through_the_trusted_proxy_only(
        tmp_path, proxy, forwarded_for, status):
    env = {"GATEWAY_CHRONOPAY_CALLBACK_IPS": CHRONOPAY_IP}
    if proxy:
        env["TRUSTED_PROXY"] = proxy
    server = LiveServer(tmp_path, env=env).start()
    try:
        assert callback_from(server, forwarded_for).status_code == status
    finally:
        server.stop()


def test_waitress_serve_call_factory_works(tmp_path):
    command = [os.path.join(os.path.dirname(sys.executable), "waitress-serve"),
               "--listen=127.0.0.1:{port}", "--call", "gateway:create_app"]
    server = LiveServer(tmp_path, command=command).start()
    try:
        page = requests.get(server.url + "/sandbox/cabinet/", timeout=10)
        assert page.status_code == 200 and "Тестовый режим" in page.text
    finally:
        server.stop()


def test_production_start_without_secrets_stops_with_one_sentence(tmp_path):
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_CONFIG"] = os.path.join(ROOT, "config.example.py")
    env["GATEWAY_DATABASE_URL"] = f"sqlite:///{tmp_path}/x.sqlite3"
    result = subprocess.run([sys.executable, "wsgi.py"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "gateway: refusing to start: Set SECRET_KEY to a value of your own, not the example's.")


def test_waitress_refuses_a_body_over_max_content_length_before_buffering_it(tmp_path):
    # Without a limit waitress buffers up to 1 GB (spilling to disk) before the app says 413.
    import socket

    server = LiveServer(tmp_path).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /chronopay/callback HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: 500000000\r\n\r\na=1")
            sock.shutdown(socket.SHUT_WR)
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413 ")
        limit = 64 * 1024  # exactly MAX_CONTENT_LENGTH still reaches the app (its 403)
        answer = requests.post(server.url + "/chronopay/callback", data=b"a=" + b"x" * (limit - 2),
                               headers={"Content-Type": "text/plain"}, timeout=10)
        assert answer.status_code == 403
    finally:
        server.stop()
