"""How ops run it: python wsgi.py and waitress-serve, with and without a trusted proxy."""

import http.client
import os
import runpy
import socket
import stat
import subprocess
import sys
import time
from urllib.parse import urlencode

import pytest
import requests
from conftest import ROOT, LiveServer, free_port

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
    ("localhost", CHRONOPAY_IP, 403),      # the unix socket's peer name: never a TCP client
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


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket, as nginx's `server unix:...` upstream speaks it."""

    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(10)
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def wait_for_socket(path, process, log):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


def test_on_unix_socket_only_its_peer_is_believed_and_no_tcp_port_listens(tmp_path):
    # Today any local process can connect to 127.0.0.1:8080 and claim to be nginx; on the
    # socket (mode 660, nginx's group) only nginx can, and no TCP port is open at all.
    path, port = str(tmp_path / "gateway.sock"), free_port()
    env = dict(os.environ, GATEWAY_CONFIG=os.path.join(ROOT, "config.sandbox.py"),
               GATEWAY_DATABASE_URL=f"sqlite:///{tmp_path}/x.sqlite3",
               GATEWAY_CHRONOPAY_CALLBACK_IPS=CHRONOPAY_IP, UNIX_SOCKET=path,
               LISTEN=f"127.0.0.1:{port}", TRUSTED_PROXY="127.0.0.1")
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "wsgi.py"], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        assert wait_for_socket(path, process, log), "no unix socket: " + log.read_text()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with pytest.raises(requests.ConnectionError):  # nothing on LISTEN to claim nginx to
            callback_from(type("Server", (), {"url": f"http://127.0.0.1:{port}"}), CHRONOPAY_IP)
        results = {}
        for forwarded_for in (CHRONOPAY_IP, "10.0.0.1"):
            fields = {"transaction_type": "Purchase", "transaction_id": "1", "customer_id": "c",
                      "total": "1.00", "order_id": "nope"}
            fields["sign"] = chronopay.callback_sign(SANDBOX["CHRONOPAY_SHARED_SECRET"], "c",
                                                     "1", "Purchase", "1.00")
            conn = UnixConnection(path)
            conn.request("POST", "/chronopay/callback", body=urlencode(fields), headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": "https"})
            results[forwarded_for] = conn.getresponse().status
            conn.close()
        assert results == {CHRONOPAY_IP: 200, "10.0.0.1": 403}
    finally:
        process.terminate()
        process.wait(10)
