"""nginx in front, as ops run it: deploy/nginx.conf on loopback ports before `python wsgi.py`
with TRUSTED_PROXY=127.0.0.1 and a production configuration (no sandbox)."""

import configparser
import http.client
import os
import secrets
import time
from urllib.parse import urlencode, urlsplit

import pytest
import requests
from conftest import ROOT, LiveServer, hidden

from gateway import billing, chronopay
from gateway.signing import make_link

from . import rawhttp
from .live import Database
from .proxy import Nginx, nginx_binary

CHRONOPAY_IP, STRANGER = "127.0.0.2", "127.0.0.3"
SECURITY_HEADERS = ("strict-transport-security", "content-security-policy", "x-frame-options",
                    "x-content-type-options", "referrer-policy")


class Stack:
    """waitress behind nginx, their secrets and their database."""

    def __init__(self, directory):
        self.secrets = {key: secrets.token_urlsafe(36) for key in (
            "SECRET_KEY", "CABINET_SECRET", "CHRONOPAY_SHARED_SECRET")}
        self.secrets["BILLING_SECRET"] = billing.new_secret()
        config = directory / "config.py"
        config.write_text("".join(f"{key} = {value!r}\n" for key, value in self.secrets.items())
                          + 'CHRONOPAY_PRODUCT_ID = "001234-0001-0001"\n')
        self.server = LiveServer(directory, config_file=str(config))
        self.nginx = Nginx(directory, self.server.port)
        self.server.env.update({
            "GATEWAY_PUBLIC_URL": self.nginx.url,
            "GATEWAY_CHRONOPAY_URL": "https://payments.chronopay.com/",
            "GATEWAY_CABINET_URL": "https://cabinet.example.ru/",
            "GATEWAY_BILLING_URL": "https://billing.example.ru/hook",
            "GATEWAY_BILLING_WORKER": "false",
            "GATEWAY_CHRONOPAY_CALLBACK_IPS": CHRONOPAY_IP,
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
        """One request from a chosen loopback address, through nginx or straight to waitress."""
        if direct:
            conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30,
                                              source_address=(source, 0))
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
    cases = [  # (what, source, headers, straight to waitress, expected status)
        ("ChronoPay through nginx", CHRONOPAY_IP, {}, False, 200),
        ("ChronoPay through nginx, its own X-Forwarded-For", CHRONOPAY_IP,
         {"X-Forwarded-For": "127.0.0.9"}, False, 200),
        ("someone else through nginx", STRANGER, {}, False, 403),
        ("X-Forwarded-For forged through nginx", STRANGER, {"X-Forwarded-For": CHRONOPAY_IP},
         False, 403),
        ("X-Forwarded-For list forged through nginx", STRANGER,
         {"X-Forwarded-For": f"{CHRONOPAY_IP}, {CHRONOPAY_IP}"}, False, 403),
        ("Forwarded forged through nginx", STRANGER, {"Forwarded": f"for={CHRONOPAY_IP}"},
         False, 403),
        ("X-Real-IP forged through nginx", STRANGER, {"X-Real-IP": CHRONOPAY_IP}, False, 403),
        ("X-Forwarded-For forged straight to waitress", STRANGER,
         {"X-Forwarded-For": CHRONOPAY_IP, "X-Forwarded-Proto": "https"}, True, 403),
        ("Forwarded forged straight to waitress", STRANGER,
         {"Forwarded": f"for={CHRONOPAY_IP};proto=https"}, True, 403),
    ]
    wrong, real, forged = [], 0, 0
    for what, source, headers, direct, expected in cases:
        status, seen = stack.callback(source, headers, direct)
        real += seen == source
        forged += expected == 403 and status != 403
        if status != expected or seen != source:
            wrong.append((what, status, seen))
    figures("nginx: callback allowlist sees the real client", len(cases),
            len(cases) - len(wrong),
            f"{len(cases)} signed callbacks from 127.0.0.2/.3: the allowlist saw the real "
            f"client {real}/{len(cases)}; forged X-Forwarded-For/Forwarded/X-Real-IP, through "
            f"nginx or straight to waitress, passed {forged}/{sum(c[-1] == 403 for c in cases)}")
    assert not wrong, wrong


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
    # The same POST straight to waitress over http: no https, so Flask-WTF skips the check.
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
            f"{same.status_code}; straight to waitress over http {status} (no check without "
            "https); session cookie Secure, HttpOnly, SameSite=Lax")
    assert all(checks.values()), checks


def test_nginx_headers_methods_sizes_and_rate_limits(stack, figures):
    wrong, runs = [], 0

    def check(what, status, headers, expected):
        nonlocal runs
        runs += 1
        names = [name.lower() for name, _ in headers]
        doubled = [h for h in SECURITY_HEADERS if names.count(h) != 1]
        version = [v for n, v in headers if n.lower() == "server" and "/" in v]
        if status != expected or doubled or version:
            wrong.append((what, status, doubled, version))

    before = stack.db.count("callbacks")
    for what, method, path, body, expected in (
            ("app page", "GET", "/pay", None, 403), ("app 404", "GET", "/nowhere", None, 404),
            ("static file", "GET", "/static/style.css", None, 200),
            ("app 405", "GET", "/chronopay/callback", None, 405),
            *((f"{m} refused by nginx", m, "/chronopay/callback", None, 405)
              for m in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND")),
            ("body over 64 kB", "POST", "/chronopay/callback", "a=" + "x" * 70_000, 413)):
        status, headers, _ = stack.send(method, path, "127.0.0.8", body)
        check(what, status, headers, expected)
    for what, payload, expected in (
            ("bad request", b"GET /pay HTTP/1.1\r\nHost: x\r\nBad header\x00\r\n\r\n", 400),
            ("URI too long", b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414)):
        answer = rawhttp.exchange("127.0.0.1", stack.nginx.https_port, payload, "127.0.0.8",
                                  stack.nginx.tls())
        head = answer.raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
        check(what, answer.statuses[0] if answer.statuses else 0,
              [tuple(line.split(": ", 1)) for line in head], expected)
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
            check("rate limited", 429, response.getheaders(), 429)
        statuses.append(response.status)
    conn.close()
    limited = statuses.count(429)
    figures("nginx: headers, methods, sizes, rate limit", runs + 3,
            runs - len(wrong) + not_journaled + to_https + (limited > 0 and max(statuses) < 500),
            f"{runs} answers (app's and nginx's own 400/405/413/414/429) each carry the 5 security "
            f"headers once, no server version; {len(wrong)} wrong; non-GET/HEAD/POST"
            f" and big bodies journaled {0 if not_journaled else 'some'}; port 80 → our https "
            f"address {'yes' if to_https else 'no'}; 60 quick /pay: {statuses.count(403)} "
            f"answered, {limited} × 429, 0 5xx")
    assert not wrong and not_journaled and to_https, wrong
    assert limited > 0 and max(statuses) < 500, statuses


def test_malformed_http_through_nginx(stack, figures):
    report = rawhttp.judge("nginx", lambda payload: rawhttp.exchange(
        "127.0.0.1", stack.nginx.https_port, payload, tls=stack.nginx.tls()),
        stack.db.journal_counts)
    figures("Malformed HTTP through nginx", report["runs"], report["passed"],
            rawhttp.summary(report))
    assert not report["problems"], report["problems"]


def test_systemd_unit_runs_waitress_behind_the_trusted_proxy_hardened():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(os.path.join(ROOT, "deploy", "dem-gateway.service"))
    service = unit["Service"]
    environment = service["Environment"]
    assert service["ExecStart"].endswith("/.venv/bin/python wsgi.py")
    assert "TRUSTED_PROXY=127.0.0.1" in environment and "GATEWAY_CONFIG=" in environment
    assert "LISTEN=127.0.0.1:8080" in environment
    assert service["User"] == "dem-gateway" and service["Restart"] == "always"
    for option in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert service[option] == "yes", option
    assert service["ProtectSystem"] == "strict"
    assert "/var/lib/dem-gateway" in service["ReadWritePaths"]
    with open(os.path.join(ROOT, "deploy", "nginx.conf"), encoding="utf-8") as fh:
        site = fh.read()
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in site
    assert "$proxy_add_x_forwarded_for" not in site
