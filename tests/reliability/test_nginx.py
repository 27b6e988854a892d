"""nginx in front, as ops run it: deploy/nginx.conf on loopback ports before `python wsgi.py`
on a unix socket (UNIX_SOCKET) and a production configuration (no sandbox)."""

import http.client
import os
import pathlib
import secrets
import socket
import ssl
import subprocess
import time
from urllib.parse import urlencode, urlsplit

import pytest
import requests
from conftest import ROOT, LiveServer, hidden

from gateway import billing, chronopay
from gateway.signing import make_link

from . import rawhttp
from .live import Database
from .proxy import Nginx, UnixConnection, nginx_binary

# NGINX_ONLY is in nginx's allow list but not the app's: it shows the app's own layer.
CHRONOPAY_IP, STRANGER, NGINX_ONLY = "127.0.0.2", "127.0.0.3", "127.0.0.4"
SECURITY_HEADERS = ("strict-transport-security", "content-security-policy", "x-frame-options",
                    "x-content-type-options", "referrer-policy")


class SocketServer(LiveServer):
    """`python wsgi.py` on a unix socket, as deploy/dem-gateway.service runs it."""

    def __init__(self, directory, config_file):
        super().__init__(directory, config_file=config_file)
        self.socket = str(directory / "gateway.sock")
        self.env["UNIX_SOCKET"] = self.socket

    def start(self):
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            conn = UnixConnection(self.socket)
            try:
                conn.request("GET", "/nowhere")
                conn.getresponse().read()
                return self
            except OSError:
                time.sleep(0.05)
            finally:
                conn.close()
        raise RuntimeError("server did not start: " + self.output())


class Stack:
    """waitress behind nginx, their secrets and their database."""

    def __init__(self, directory):
        self.secrets = {key: secrets.token_urlsafe(36) for key in (
            "SECRET_KEY", "CABINET_SECRET", "CHRONOPAY_SHARED_SECRET")}
        self.secrets["BILLING_SECRET"] = billing.new_secret()
        config = directory / "config.py"
        config.write_text("".join(f"{key} = {value!r}\n" for key, value in self.secrets.items())
                          + 'CHRONOPAY_PRODUCT_ID = "001234-0001-0001"\n')
        self.server = SocketServer(directory, config_file=str(config))
        self.nginx = Nginx(directory, self.server.socket, allow=(CHRONOPAY_IP, NGINX_ONLY))
        self.server.env.update({
            "GATEWAY_PUBLIC_URL": self.nginx.url,
            "GATEWAY_CHRONOPAY_URL": "https://payments.chronopay.com/",
            "GATEWAY_CABINET_URL": "https://cabinet.example.ru/",
            "GATEWAY_BILLING_URL": "https://billing.example.ru/hook",
            "GATEWAY_BILLING_WORKER": "false",
            "GATEWAY_CHRONOPAY_CALLBACK_IPS": CHRONOPAY_IP,
            # Set as an ops person might leave it: on the socket it must change nothing.
            "TRUSTED_PROXY": "127.0.0.1",
        })
        self.db = Database(directory / "live.sqlite3")

    def start(self):
        self.server.start()
        self.nginx.start()
        return self

    def stop(self):
        self.nginx.stop()
        self.server.stop()

    def send(self, method, path, source="127.0.0.1", body=None, headers=None, direct=False):
        """One request from a chosen loopback address through nginx, or straight to waitress's
        socket (as nginx itself, the one peer allowed to open it)."""
        if direct:
            conn = UnixConnection(self.server.socket)
        else:
            conn = http.client.HTTPSConnection("127.0.0.1", self.nginx.https_port, timeout=30,
                                               source_address=(source, 0),
                                               context=self.nginx.tls())
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def callback(self, source, headers=None, direct=False):
        """A correctly signed callback (for no order we have): 200 means the allowlist passed."""
        fields = {"transaction_type": "Purchase", "transaction_id": secrets.token_hex(4),
                  "customer_id": "c-1", "total": "100.00", "order_id": "none"}
        fields["sign"] = chronopay.callback_sign(
            self.secrets["CHRONOPAY_SHARED_SECRET"], "c-1", fields["transaction_id"], "Purchase",
            "100.00")
        headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        status, _, _ = self.send("POST", "/chronopay/callback", source, urlencode(fields),
                                 headers, direct)
        seen = self.db.query("SELECT remote_addr FROM callbacks WHERE transaction_id = ?",
                             fields["transaction_id"])
        return status, seen[0][0] if seen else None


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    nginx_binary()
    stack = Stack(tmp_path_factory.mktemp("nginx")).start()
    yield stack
    stack.stop()
    assert "Traceback" not in stack.server.output()


def test_callback_allowlist_sees_the_real_client_through_nginx(stack, figures):
    cases = [  # (what, source, headers, expected status, address the app journaled)
        ("ChronoPay through nginx", CHRONOPAY_IP, {}, 200, CHRONOPAY_IP),
        ("ChronoPay through nginx, its own X-Forwarded-For", CHRONOPAY_IP,
         {"X-Forwarded-For": "127.0.0.9"}, 200, CHRONOPAY_IP),
        # nginx's allow list answers these itself: the app never sees them.
        ("someone else through nginx", STRANGER, {}, 403, None),
        ("X-Forwarded-For forged through nginx", STRANGER, {"X-Forwarded-For": CHRONOPAY_IP},
         403, None),
        ("X-Forwarded-For list forged through nginx", STRANGER,
         {"X-Forwarded-For": f"{CHRONOPAY_IP}, {CHRONOPAY_IP}"}, 403, None),
        ("Forwarded forged through nginx", STRANGER, {"Forwarded": f"for={CHRONOPAY_IP}"},
         403, None),
        ("X-Real-IP forged through nginx", STRANGER, {"X-Real-IP": CHRONOPAY_IP}, 403, None),
        # Past nginx's list, the app's own still refuses (and samples it).
        ("in nginx's list, not the app's", NGINX_ONLY, {"X-Forwarded-For": CHRONOPAY_IP},
         403, NGINX_ONLY),
    ]
    wrong, forged = [], 0
    for what, source, headers, expected, journaled in cases:
        status, seen = stack.callback(source, headers)
        forged += expected == 403 and status != 403
        if status != expected or seen != journaled:
            wrong.append((what, status, seen))
    # No TCP port: a local process has nowhere to send a forged X-Forwarded-For to waitress.
    try:
        socket.create_connection(("127.0.0.1", stack.server.port), timeout=5).close()
        tcp_open = True
    except ConnectionRefusedError:
        tcp_open = False
    figures("nginx: callback allowlist sees the real client", len(cases) + 1,
            len(cases) - len(wrong) + (not tcp_open),
            f"{len(cases)} signed callbacks from 127.0.0.2/.3/.4: {len(wrong)} wrong; forged "
            f"X-Forwarded-For/Forwarded/X-Real-IP passed {forged}/"
            f"{sum(c[3] == 403 for c in cases)}; strangers stopped by nginx's allow list before "
            f"the app, one in nginx's list stopped by the app's; waitress's TCP port "
            f"{'open' if tcp_open else 'closed (unix socket only)'}")
    assert not wrong and not tcp_open, wrong


def confirm_form(session, stack):
    query = make_link(stack.secrets["CABINET_SECRET"], "dem001", "6", "1000.00",
                      int(time.time()) + 600)
    page = session.get(stack.nginx.url + "/pay", params=query, timeout=30,
                       verify=stack.nginx.cert)
    assert page.status_code == 200, page.text
    return page, {"csrf_token": hidden(page.text, "csrf_token"),
                  "token": hidden(page.text, "token")}


def test_behind_nginx_request_is_secure_and_the_https_referrer_check_runs(stack, figures):
    session = requests.Session()
    page, form = confirm_form(session, stack)
    cookie = page.headers["Set-Cookie"]
    url = stack.nginx.url + "/pay/confirm"

    def post(referer):
        headers = {"Referer": referer} if referer else {}
        return session.post(url, data=form, headers=headers, allow_redirects=False,
                            timeout=30, verify=stack.nginx.cert)

    missing, foreign, plain, same = (post(None), post("https://evil.example/pay"),
                                     post(page.url.replace("https:", "http:")), post(page.url))
    # The same POST straight to waitress's socket without X-Forwarded-Proto: no https, so
    # Flask-WTF skips the check (only nginx may open the socket).
    status, headers, _ = stack.send(
        "POST", "/pay/confirm", STRANGER, urlencode(form), direct=True,
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "Cookie": "; ".join(f"{k}={v}" for k, v in session.cookies.items())})
    location = same.headers.get("Location", "")
    query = dict(p.split("=", 1) for p in urlsplit(location).query.split("&"))
    checks = {
        "no Referer refused": missing.status_code == 400,
        "foreign Referer refused": foreign.status_code == 400,
        "http Referer refused": plain.status_code == 400,
        "same-origin Referer hands off": same.status_code == 303 and location.startswith(
            "https://payments.chronopay.com/"),
        "cb_url is https": query.get("cb_url", "").startswith("https%3A%2F%2F127.0.0.1"),
        "direct http skips the check": status == 303,
        "session cookie Secure; HttpOnly; SameSite=Lax": all(
            part in cookie for part in ("Secure", "HttpOnly", "SameSite=Lax")),
    }
    figures("nginx: request.is_secure behind the proxy", len(checks), sum(checks.values()),
            f"over https through nginx a confirmation without Referer {missing.status_code}, "
            f"foreign {foreign.status_code}, http {plain.status_code}, same-origin "
            f"{same.status_code}; straight to waitress's socket over http {status} (no check "
            "without https); session cookie Secure, HttpOnly, SameSite=Lax")
    assert all(checks.values()), checks


def test_nginx_headers_methods_sizes_and_rate_limits(stack, figures):
    wrong, runs = [], 0

    def check(what, status, headers, expected, by_nginx):
        nonlocal runs
        runs += 1
        names = [name.lower() for name, _ in headers]
        doubled = [h for h in SECURITY_HEADERS if names.count(h) != 1]
        version = [v for n, v in headers if n.lower() == "server" and "/" in v]
        # nginx's own answers are never cached; the app's keep the app's one header.
        cache = [v for n, v in headers if n.lower() == "cache-control"]
        cache_wrong = cache != ["no-store"] if by_nginx else len(cache) > 1
        if status != expected or doubled or version or cache_wrong:
            wrong.append((what, status, doubled, version, cache))

    before = stack.db.count("callbacks")
    for what, source, method, path, body, expected, by_nginx in (
            ("app page", "127.0.0.8", "GET", "/pay", None, 403, False),
            ("app 404", "127.0.0.8", "GET", "/nowhere", None, 404, False),
            ("static file", "127.0.0.8", "GET", "/static/style.css", None, 200, False),
            ("app 405", CHRONOPAY_IP, "GET", "/pay/confirm", None, 405, False),
            ("callback from outside nginx's allow list", "127.0.0.8", "GET",
             "/chronopay/callback", None, 403, True),
            *((f"{m} refused by nginx", "127.0.0.8", m, "/chronopay/callback", None, 405, True)
              for m in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND")),
            ("callback body over 64 kB", CHRONOPAY_IP, "POST", "/chronopay/callback",
             "a=" + "x" * 70_000, 413, True),
            ("page body over 8 kB", "127.0.0.8", "POST", "/pay/confirm", "a=" + "x" * 9_000,
             413, True)):
        status, headers, _ = stack.send(method, path, source, body)
        check(what, status, headers, expected, by_nginx)
    for what, payload, expected in (
            ("bad request", b"GET /pay HTTP/1.1\r\nHost: x\r\nBad header\x00\r\n\r\n", 400),
            ("URI too long", b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414)):
        answer = rawhttp.exchange("127.0.0.1", stack.nginx.https_port, payload, "127.0.0.8",
                                  stack.nginx.tls())
        head = answer.raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
        check(what, answer.statuses[0] if answer.statuses else 0,
              [tuple(line.split(": ", 1)) for line in head], expected, True)
    not_journaled = stack.db.count("callbacks") == before
    # http:// on port 80 goes to our https address, whatever Host the client names.
    conn = http.client.HTTPConnection("127.0.0.1", stack.nginx.http_port, timeout=30)
    conn.request("GET", "/pay?x=1", headers={"Host": "evil.example"})
    redirect = conn.getresponse()
    to_https = redirect.status == 301 and redirect.getheader("Location") == (
        f"{stack.nginx.url}/pay?x=1")
    conn.close()
    # 60 requests at once-speed on one connection from one address: the burst, then 429.
    statuses = []
    conn = http.client.HTTPSConnection("127.0.0.1", stack.nginx.https_port, timeout=30,
                                       source_address=("127.0.0.9", 0), context=stack.nginx.tls())
    for _ in range(60):
        conn.request("GET", "/pay")
        response = conn.getresponse()
        response.read()
        if response.status == 429 and 429 not in statuses:
            check("rate limited", 429, response.getheaders(), 429, True)
        statuses.append(response.status)
    conn.close()
    limited = statuses.count(429)
    figures("nginx: headers, methods, sizes, rate limit", runs + 3,
            runs - len(wrong) + not_journaled + to_https + (limited > 0 and max(statuses) < 500),
            f"{runs} answers (app's and nginx's own 400/403/405/413/414/429) each carry the 5 "
            f"security headers once, nginx's own Cache-Control: no-store, no server version; "
            f"{len(wrong)} wrong; non-GET/HEAD/POST"
            f" and big bodies journaled {0 if not_journaled else 'some'}; port 80 → our https "
            f"address {'yes' if to_https else 'no'}; 60 quick /pay: {statuses.count(403)} "
            f"answered, {limited} × 429, 0 5xx")
    assert not wrong and not_journaled and to_https, wrong
    assert limited > 0 and max(statuses) < 500, statuses


def test_malformed_http_through_nginx(stack, figures):
    # From ChronoPay's address: nginx's allow list would refuse the controls from anyone else.
    report = rawhttp.judge("nginx", lambda payload: rawhttp.exchange(
        "127.0.0.1", stack.nginx.https_port, payload, CHRONOPAY_IP, tls=stack.nginx.tls()),
        stack.db.journal_counts)
    figures("Malformed HTTP through nginx", report["runs"], report["passed"],
            rawhttp.summary(report))
    assert not report["problems"], report["problems"]


def unit_settings(path):
    """A systemd unit's settings as {section: {key: [values in order]}} (keys may repeat)."""
    sections, current = {}, None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
            else:
                key, value = line.split("=", 1)
                current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_runs_waitress_on_the_socket_hardened():
    service = unit_settings(os.path.join(ROOT, "deploy", "dem-gateway.service"))["Service"]
    environment = " ".join(service["Environment"]).split()
    one = {key: values[-1] for key, values in service.items()}
    assert one["ExecStart"].endswith("/.venv/bin/python wsgi.py")
    assert "UNIX_SOCKET=/run/dem-gateway/gateway.sock" in environment
    assert "GATEWAY_INSTANCE_PATH=/var/lib/dem-gateway" in environment
    assert any(item.startswith("GATEWAY_CONFIG=") for item in environment)
    assert not any(item.startswith(("LISTEN=", "TRUSTED_PROXY=")) for item in environment)
    assert one["User"] == "dem-gateway" and one["Restart"] == "always"
    assert one["StateDirectory"] == "dem-gateway" and one["RuntimeDirectory"] == "dem-gateway"
    for option in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert one[option] == "yes", option
    assert one["ProtectSystem"] == "strict"
    with open(os.path.join(ROOT, "deploy", "nginx.conf"), encoding="utf-8") as fh:
        site = fh.read()
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in site
    assert "$proxy_add_x_forwarded_for" not in site
    assert "server unix:/run/dem-gateway/gateway.sock;" in site
    assert "127.0.0.1:8080" not in site


def test_access_log_keeps_no_bearer_value(stack, figures):
    query = make_link(stack.secrets["CABINET_SECRET"], "dem001", "6", "1000.00",
                      int(time.time()) + 600)
    link = "/pay?" + urlencode(query)
    ref = "20261202-0123456789ab." + secrets.token_urlsafe(24)  # shaped like a signed reference
    bearers = [query["sig"], ref.split(".")[1]]
    sent = [("GET", link, {"Referer": "https://cabinet.example.ru/?sig=" + query["sig"]}),
            ("GET", f"/pay/success/{ref}", {"Referer": f"https://x/pay/success/{ref}"}),
            ("GET", f"/pay/decline/{ref}", {}),
            ("GET", f"/PAY/SUCCESS/{ref}?again=1", {})]
    for method, path, headers in sent:
        stack.send(method, path, "127.0.0.7", headers=headers)
    # Past the rate limit nginx writes an error line quoting the request: not for /pay.
    limited = [stack.send("GET", link, "127.0.0.10")[0] for _ in range(30)]
    deadline = time.monotonic() + 10  # nginx writes the line as each request ends
    text = ""
    while time.monotonic() < deadline and text.count("127.0.0.7") < len(sent):
        path = pathlib.Path(stack.nginx.access_log)
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        time.sleep(0.05)
    lines = [line for line in text.splitlines() if line.startswith("127.0.0.7 ")]
    errors = "".join(pathlib.Path(stack.nginx.directory, name).read_text(errors="replace")
                     for name in ("error.log", "site-error.log")
                     if pathlib.Path(stack.nginx.directory, name).exists())
    leaked = [b for b in bearers if b in text or b in errors]
    figures("nginx: access log without bearer values", len(sent), len(lines) - bool(leaked),
            f"{len(sent)} requests carrying a link signature or a signed order reference (in the "
            f"query, the path, the Referer) and {limited.count(429)} × 429 for a link: "
            f"{len(lines)} logged, {len(leaked)} bearer values found in the access or error log")
    assert len(lines) == len(sent), text
    assert 429 in limited, limited
    assert not leaked, (lines, errors[-2000:])
    assert '"GET /pay"' in text and '"GET /pay/success/-"' in text, lines


def tls_connection(stack, source):
    sock = socket.create_connection(("127.0.0.1", stack.nginx.https_port), timeout=10,
                                    source_address=(source, 0))
    return stack.nginx.tls().wrap_socket(sock, server_hostname="127.0.0.1")


def test_a_slow_body_flood_from_one_address_cannot_crowd_out_chronopay_or_a_subscriber(
        stack, figures):
    # 80 connections from one address each announce a body and trickle one byte of it. nginx
    # keeps 20 of them in progress (limit_conn) and answers the rest 429 at once; ChronoPay's
    # callback and a subscriber's page get through meanwhile.
    flood, held = 80, []
    try:
        for _ in range(flood):
            conn = tls_connection(stack, "127.0.0.5")
            conn.sendall(b"POST /flood HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4000\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n\r\na")
            held.append(conn)
        refused, answered = 0, set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(answered) < flood - 20:
            for index, conn in enumerate(held):
                if index in answered:
                    continue
                conn.settimeout(0.01)
                try:
                    data = conn.recv(64)
                except (TimeoutError, ssl.SSLWantReadError):
                    continue
                answered.add(index)
                refused += data.startswith(b"HTTP/1.1 429")
        status, _ = stack.callback(CHRONOPAY_IP)
        link = make_link(stack.secrets["CABINET_SECRET"], "dem002", "7", "500.00",
                         int(time.time()) + 600)
        page, _, _ = stack.send("GET", "/pay?" + urlencode(link), "127.0.0.6")
        still_held = flood - len(answered)
    finally:
        for conn in held:
            conn.close()
    figures("nginx: a slow-body flood from one address", 3,
            (refused == flood - 20) + (status == 200) + (page == 200),
            f"{flood} connections from 127.0.0.5 trickling bodies: {still_held} held, {refused} "
            f"answered 429 at once; meanwhile ChronoPay's callback {status}, a subscriber's page "
            f"{page}")
    assert refused == flood - 20 and still_held == 20, (refused, still_held)
    assert status == 200 and page == 200
