"""Security: CSRF, redirects, headers and cookies, logs, signature comparisons, pip-audit."""

import ast
import json
import logging
import pathlib
import re
import subprocess
import sys
import time
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from conftest import (
    ROOT,
    LiveServer,
    callback_fields,
    confirm_page,
    hand_off,
    hidden,
    leaks,
    link,
    send_callback,
)
from itsdangerous import URLSafeTimedSerializer

from gateway import create_app
from gateway.errors import StoreBusy, StoreUnavailable, TransportError

from . import rawhttp
from .live import SANDBOX, open_order

HTTPS = "https://pay.test"


@pytest.fixture
def secure_app(config):
    """The app as production serves it: https PUBLIC_URL, CSRF's strict referrer check on."""
    app = create_app(config)
    yield app
    app.extensions["store"].close()


def page_fields(client, app, amount="1000.00"):
    """Open a link over https; the form's fields and the page's address (a browser's Referer)."""
    url = link(app, amount=amount)
    page = client.get(url, base_url=HTTPS).get_data(as_text=True)
    names = ("csrf_token", "token") if amount else ("csrf_token", "ticket")
    return {name: hidden(page, name) for name in names}, HTTPS + url


def expired_csrf(app, client, seconds=7200):
    """The session's own CSRF token, signed as if it had been issued `seconds` ago."""
    cookie = client.get_cookie("session", domain="pay.test")
    raw = app.session_interface.get_signing_serializer(app).loads(cookie.value)["csrf_token"]

    class Past(URLSafeTimedSerializer):
        def make_signer(self, salt=None):
            signer = super().make_signer(salt)
            signer.get_timestamp = lambda: int(time.time()) - seconds
            return signer

    return Past(app.secret_key, salt="wtf-csrf-token").dumps(raw)


def test_csrf_refuses_every_forged_or_stale_post(secure_app, figures):
    app, store = secure_app, secure_app.extensions["store"]
    victim, other = app.test_client(), app.test_client()
    fields, referer = page_fields(victim, app)
    other_fields, _ = page_fields(other, app)
    amount_fields, amount_referer = page_fields(victim, app, amount=None)
    amount_fields["amount"] = "1000"
    good = {"Referer": referer}
    attempts = [
        ("no token", victim, "/pay/confirm", {"token": fields["token"]}, good),
        ("empty token", victim, "/pay/confirm", dict(fields, csrf_token=""), good),
        ("garbage token", victim, "/pay/confirm", dict(fields, csrf_token="x.y.z"), good),
        ("another session's token", other, "/pay/confirm", fields, good),
        ("token without its session", app.test_client(), "/pay/confirm", fields, good),
        ("token of the other session", victim, "/pay/confirm",
         dict(fields, csrf_token=other_fields["csrf_token"]), good),
        ("expired token", victim, "/pay/confirm",
         dict(fields, csrf_token=expired_csrf(app, victim)), good),
        ("no Referer over https", victim, "/pay/confirm", fields, {}),
        ("foreign Referer", victim, "/pay/confirm", fields, {"Referer": "https://evil.example/"}),
        ("http Referer", victim, "/pay/confirm", fields,
         {"Referer": referer.replace("https:", "http:")}),
        ("amount form, no token", victim, "/pay/amount",
         {k: v for k, v in amount_fields.items() if k != "csrf_token"},
         {"Referer": amount_referer}),
        ("amount form, another session", other, "/pay/amount", amount_fields,
         {"Referer": amount_referer}),
    ]
    refused = 0
    for _, client, path, data, headers in attempts:
        response = client.post(path, data=data, headers=headers, base_url=HTTPS)
        refused += response.status_code == 400 and "Location" not in response.headers
    for path in ("/pay/confirm", "/pay/amount"):  # GET instead of POST
        response = victim.get(path, query_string=fields, base_url=HTTPS, headers=good)
        attempts.append(("GET", victim, path, fields, good))
        refused += response.status_code == 405 and "Location" not in response.headers
    orders = store.read().count("orders")
    control = victim.post("/pay/confirm", data=fields, headers=good, base_url=HTTPS)
    handed_off = control.status_code == 303 and control.headers["Location"].startswith(
        app.config["CHRONOPAY_URL"])
    figures("CSRF: missing, foreign-session, expired token; GET", len(attempts) + 1,
            refused + handed_off,
            f"{len(attempts)} forged or stale submissions: {refused} refused (400/405, no "
            f"Location), {orders} orders; the genuine one with a same-origin Referer "
            f"{control.status_code} to ChronoPay")
    assert refused == len(attempts) and orders == 0 and handed_off


# --- Redirects -------------------------------------------------------------------------------

HOSTILE_PATHS = [
    "/", "//", "///evil.example", "//evil.example/pay", "/pay", "/pay/", "/pay//amount",
    "/pay//success/x", "/static//style.css", "/static/../pay", "/\\evil.example",
    "/%2F%2Fevil.example", "/pay/success/%2F%2Fevil.example", "/pay/success/x%2F..%2F..",
    "/pay?next=//evil.example&url=https://evil.example&return_to=https://evil.example",
    "/pay/decline/x?next=https://evil.example", "/sandbox/cabinet", "/sandbox/billing",
    "/sandbox/chronopay", "/sandbox//cabinet/", "/chronopay/callback/",
]
HOSTILE_HEADERS = [{}, {"Host": "evil.example"}, {"X-Forwarded-Host": "evil.example"},
                   {"X-Original-URL": "//evil.example"}, {"Referer": "https://evil.example/"},
                   {"Host": "evil.example", "X-Forwarded-Proto": "http"}]


def ours(location, app):
    """Relative to us, or absolute to PUBLIC_URL or CHRONOPAY_URL."""
    if location.startswith(("//", "/\\")) or "\\" in location.split("?")[0]:
        return False
    public, chronopay = app.config["PUBLIC_URL"], app.config["CHRONOPAY_URL"]
    absolute = urljoin(public + "/", location)
    return (urlsplit(absolute).netloc == urlsplit(public).netloc
            and absolute.startswith(public + "/")) or absolute.startswith(chronopay)


def test_no_open_redirect(config, tmp_path, figures):
    seen, foreign = [], []
    sandbox_url = "https://pay.test"
    apps = [create_app(config), create_app(dict(
        config, SANDBOX=True, DATABASE_URL=f"sqlite:///{tmp_path}/sandbox.sqlite3",
        INSTANCE_PATH=str(tmp_path / "instance"),
        CHRONOPAY_URL=sandbox_url + "/sandbox/chronopay/",
        BILLING_URL=sandbox_url + "/sandbox/billing/"))]
    for app in apps:
        client = app.test_client()
        for path in HOSTILE_PATHS:
            for headers in HOSTILE_HEADERS:
                for method in ("GET", "POST", "HEAD"):
                    response = client.open(path, method=method, headers=headers,
                                           base_url=HTTPS)
                    seen.append((app, response.headers.get("Location")))
        # The flows that redirect on purpose, with hostile extras.
        query = hand_off(client, app)
        for ref_url in (query["success_url"], query["decline_url"]):
            response = client.post(ref_url.replace(app.config["PUBLIC_URL"], ""),
                                   data={"success_url": "https://evil.example",
                                         "next": "//evil.example"})
            seen.append((app, response.headers.get("Location")))
        response = client.post("/pay/confirm", data=confirm_page(client, app),
                               headers={"Host": "evil.example"})
        seen.append((app, response.headers.get("Location")))
    sandbox = apps[1].test_client()
    page = sandbox.get("/sandbox/cabinet/").get_data(as_text=True)
    response = sandbox.post("/sandbox/cabinet/", data={
        "csrf_token": hidden(page, "csrf_token"), "amount": "100"},
        headers={"Host": "evil.example"})
    seen.append((apps[1], response.headers.get("Location")))
    for app in apps:
        app.extensions["store"].close()
    apps[1].extensions["sandbox_ledger"].close()
    live = live_redirects(tmp_path)
    redirects = [(app, loc) for app, loc in seen if loc] + live["redirects"]
    foreign = [loc for app, loc in redirects if not ours(loc, app)]
    figures("No open redirect: every Location goes to us or ChronoPay", len(seen) + live["runs"],
            len(seen) + live["runs"] - len(foreign),
            f"{len(seen) + live['runs']} requests with hostile paths, Host, X-Forwarded-Host, "
            f"parameters (in-process and raw to waitress): {len(redirects)} redirects, "
            f"{len(foreign)} to anywhere else")
    assert not foreign, foreign[:5]


class _Live:
    """The few bits of an app that `ours` reads, for a live sandbox server."""

    def __init__(self, url):
        self.config = {"PUBLIC_URL": url, "CHRONOPAY_URL": url + "/sandbox/chronopay/"}


def live_redirects(tmp_path):
    """Raw requests with a foreign Host to a real waitress; the Locations it sent."""
    server = LiveServer(tmp_path).start()
    out = []
    try:
        for path in ("/sandbox/cabinet", "/sandbox/billing", "/static//style.css",
                     "/pay//success/x", "/sandbox/chronopay"):
            for host in ("evil.example", "127.0.0.1:1", "evil.example:80@x"):
                answer = rawhttp.exchange("127.0.0.1", server.port, (
                    f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").encode())
                head = answer.raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
                for line in head.split("\r\n"):
                    if line.lower().startswith("location:"):
                        out.append((_Live(server.url), line.split(":", 1)[1].strip()))
        runs = 15
    finally:
        server.stop()
    return {"runs": runs, "redirects": out}


# --- Headers, cookies, sizes -----------------------------------------------------------------

def test_security_headers_on_every_response_and_a_strict_session_cookie(config, figures,
                                                                         tmp_path):
    app = create_app(dict(config, PROPAGATE_EXCEPTIONS=False))

    def boom():
        raise RuntimeError("an unexpected failure")

    def database_down():
        raise StoreUnavailable("disk I/O error")

    # Test-only routes (registered on this instance only) to reach the 500 and 503 pages.
    app.add_url_rule("/test-only/boom", view_func=boom)
    app.add_url_rule("/test-only/database", view_func=database_down)
    client = app.test_client()
    fields, referer = page_fields(client, app)
    cookie = next(h for h in app.test_client().get(link(app, amount=None), base_url=HTTPS)
                  .headers.getlist("Set-Cookie") if h.startswith("session="))
    query = hand_off(client, app)
    seen = {}

    def get(label, *args, **kwargs):
        kwargs.setdefault("base_url", HTTPS)
        seen[label] = client.open(*args, buffered=True, **kwargs)

    get("amount page 200", link(app, amount=None))
    get("confirmation 200", link(app))
    get("hand-off 303", "/pay/confirm", method="POST", data=fields, headers={"Referer": referer})
    get("result 200", query["success_url"].replace(app.config["PUBLIC_URL"], ""))
    get("result POST 303", query["success_url"].replace(app.config["PUBLIC_URL"], ""),
        method="POST")
    get("static: canonical redirect 308", "/static//style.css")
    get("CSRF 400", "/pay/confirm", method="POST", data={"token": "x"}, headers={
        "Referer": referer})
    get("bad link 403", link(app, tamper={"sig": "0" * 64}))
    get("not found 404", "/nowhere")
    get("method 405", "/pay/confirm")
    get("expired link 410", link(app, expires=int(app.extensions["clock"]()) - 1))
    get("too large 413", "/pay/amount", method="POST", data={"a": "x" * 70_000})
    page = client.get(link(app, amount=None), base_url=HTTPS).get_data(as_text=True)
    get("wrong amount 422", "/pay/amount", method="POST", headers={"Referer": referer}, data={
        "csrf_token": hidden(page, "csrf_token"), "ticket": hidden(page, "ticket"),
        "amount": "abc"})
    get("error 500", "/test-only/boom")
    get("database 503", "/test-only/database")
    get("static 200", "/static/style.css")
    get("callback 200", "/chronopay/callback", method="POST",
        data=callback_fields(app, query, transaction_id="1"),
        environ_base={"REMOTE_ADDR": "127.0.0.1"})
    get("callback 403", "/chronopay/callback", method="POST", data={"a": "1"})
    get("callback 413", "/chronopay/callback", method="POST", data={"a": "x" * 70_000})
    problems = {label: header_problems(label, r) for label, r in seen.items()}
    statuses = {label: r.status_code for label, r in seen.items()}
    wrong_status = [label for label, code in statuses.items() if str(code) not in label]
    cookie_parts = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    cookie_ok = {"secure", "httponly", "samesite"} <= cookie_parts and not (
        {"expires", "max-age"} & cookie_parts) and "SameSite=Lax" in cookie
    limits_ok = (app.config["MAX_CONTENT_LENGTH"] <= 64 * 1024
                 and app.permanent_session_lifetime.total_seconds() <= 3600
                 and app.config["WTF_CSRF_TIME_LIMIT"] <= 3600)
    live = live_headers(tmp_path)
    app.extensions["store"].close()
    bad = [label for label, p in problems.items() if p] + wrong_status
    runs = len(seen) + 2 + live["runs"]
    passed = len(seen) - len(set(bad)) + cookie_ok + limits_ok + live["passed"]
    figures("Security headers on every response, cookie, sizes", runs, passed,
            f"{len(seen)} in-process answers (200, 303, 308, 400, 403, 404, 405, 410, 413, 422,"
            f" 500, 503, static, callback) and {live['runs']} from waitress (its own 413 "
            f"aside): HSTS, CSP (frame-ancestors 'none'), nosniff, X-Frame-Options DENY, "
            f"Referrer-Policy same-origin on all, Cache-Control no-store on all dynamic; "
            f"{len(set(bad))} missing; session cookie Secure, HttpOnly, SameSite=Lax, "
            f"browser-session, signed session ≤ 1 h; MAX_CONTENT_LENGTH "
            f"{app.config['MAX_CONTENT_LENGTH'] // 1024} kB")
    assert not bad, {label: problems.get(label) or statuses[label] for label in bad}
    assert cookie_ok, cookie
    assert limits_ok and live["runs"] == live["passed"], live


def header_problems(label, response):
    """What a response lacks of the security headers."""
    h = response.headers
    problems = []
    if "max-age=31536000" not in h.get("Strict-Transport-Security", ""):
        problems.append("HSTS")
    csp = h.get("Content-Security-Policy", "")
    if "default-src 'none'" not in csp or "frame-ancestors 'none'" not in csp:
        problems.append("CSP")
    if h.get("X-Content-Type-Options") != "nosniff":
        problems.append("nosniff")
    if h.get("X-Frame-Options") != "DENY":
        problems.append("X-Frame-Options")
    # same-origin: the Referer still reaches us (Flask-WTF's https check needs it), no one else.
    if h.get("Referrer-Policy") != "same-origin":
        problems.append("Referrer-Policy")
    if not label.startswith("static") and h.get("Cache-Control") != "no-store":
        problems.append("Cache-Control")
    return problems


def live_headers(tmp_path):
    """The same headers on what a real waitress serves."""
    server = LiveServer(tmp_path).start()
    try:
        answers = [requests.request(method, server.url + path, timeout=30, data=data)
                   for method, path, data in (
                       ("GET", "/sandbox/cabinet/", None), ("GET", "/nowhere", None),
                       ("GET", "/pay", None), ("POST", "/chronopay/callback", {"a": "1"}),
                       ("GET", "/chronopay/callback", None), ("GET", "/static/style.css", None),
                       ("POST", "/pay/confirm", {"a": "x" * 70_000}))]
    finally:
        server.stop()
    passed = 0
    for answer in answers:
        label = "static" if answer.url.endswith(".css") else "dynamic"
        # waitress itself refuses the 70 kB body (413 without the app's headers); nginx adds
        # them to such answers in front (test_nginx.py).
        passed += not header_problems(label, answer) or (
            answer.status_code == 413 and "(generated by gateway)" in answer.text)
    return {"runs": len(answers), "passed": passed}


# --- Logs, comparisons, dependencies ---------------------------------------------------------

def test_no_secret_sign_or_signature_in_any_log_line(client, app, store, caplog, tmp_path,
                                                     figures):
    caplog.set_level(logging.DEBUG, logger="gateway")  # the service's loggers, all levels
    # Every log statement the service has: applied, duplicate, replay, review, rejected...
    query = hand_off(client, app)
    fields = callback_fields(app, query)
    for sent in (fields, fields, dict(fields, order_id="nope"), dict(fields, sign="f" * 32),
                 dict(fields, transaction_id="70002", total="1.00"), {"only": "junk"}):
        send_callback(client, sent)
    send_callback(client, fields, remote="10.9.9.9")
    client.get(link(app, tamper={"sig": "0" * 64}))
    # ...a dead billing event, and the database error page.
    deliverer = app.extensions["deliverer"]
    deliverer.http = BillingDown()
    app.extensions["clock"].advance(app.config["BILLING_RETRY_FOR"] + 1)
    deliverer.drain()
    with app.test_request_context():
        app.handle_user_exception(StoreBusy("database is locked"))
    in_process = [logging.Formatter("%(name)s %(message)s").format(r) for r in caplog.records]
    # The sandbox over waitress: a paid card, the callback it makes, billing's delivery.
    server = LiveServer(tmp_path).start()
    try:
        sandbox_payment(server.url)
        requests.post(server.url + "/chronopay/callback", timeout=30,
                      data=dict(fields, sign="0" * 32))
    finally:
        server.stop()
    live = server.output().splitlines()
    secret_values = {app.config[k] for k in ("SECRET_KEY", "CABINET_SECRET",
                                             "CHRONOPAY_SHARED_SECRET", "BILLING_SECRET")}
    secret_values |= {SANDBOX[k] for k in ("SECRET_KEY", "CABINET_SECRET",
                                           "CHRONOPAY_SHARED_SECRET", "BILLING_SECRET")}
    found = leaks("\n".join(in_process + live), secret_values | {fields["sign"]})
    planted = leaks(f"x {fields['sign']} y")  # the oracle itself sees a sign
    figures("No secret, sign or link signature in any log line", len(in_process) + len(live),
            len(in_process) + len(live) - len(found),
            f"{len(in_process)} in-process lines (every log statement, DEBUG on) and {len(live)}"
            f" from waitress: {len(found)} with a secret, sign or signature; every other test "
            "of the suite is held to the same by conftest's no_secret_in_logs and "
            "LiveServer.stop")
    assert planted and not found, found[:3]


def sandbox_payment(url):
    """Pay with the sandbox's test card: its callback is applied, then billing is called."""
    session = requests.Session()
    query = open_order(url, session=session)
    page = session.get(url + "/sandbox/chronopay/", params=query, timeout=30).text
    paid = session.post(url + "/sandbox/chronopay/pay", timeout=30, data={
        "csrf_token": hidden(page, "csrf_token"), "handoff": hidden(page, "handoff"),
        "email": "dem001@example.ru", "country": "RUS", "card": "4111111111111111",
        "expiry": "12/30", "cvc": "123"})
    # The sandbox posts its callback before it redirects: the page already says paid.
    assert "Платеж принят" in paid.text, paid.text


class BillingDown:
    """Billing that never answers."""

    def post(self, url, **kwargs):
        raise TransportError("connection refused")


SIGNATURE_WORDS = {"sig", "sign", "signature", "signatures", "digest", "hexdigest", "mac",
                   "hmac", "token"}


def words_in(node):
    """The words (split at _ and case) of the identifiers and strings an expression uses."""
    return {word for name in names_in(node)
            for word in re.split(r"[^a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower())}


def names_in(node):
    """The identifiers an expression is built from."""
    out = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            out.append(sub.id)
        elif isinstance(sub, ast.Attribute):
            out.append(sub.attr)
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            out.append(sub.value)
    return out


def test_signatures_are_compared_only_with_compare_digest(figures):
    comparisons, suspicious, digests = 0, [], 0
    for path in sorted(pathlib.Path(ROOT, "gateway").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and "compare_digest" in names_in(node.func):
                digests += 1
            if not isinstance(node, ast.Compare):
                continue
            comparisons += 1
            if not any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot))
                       for op in node.ops):
                continue
            if words_in(node) & SIGNATURE_WORDS:
                suspicious.append(f"{path.name}:{node.lineno}")
    figures("Signature comparisons only with hmac.compare_digest", comparisons,
            comparisons - len(suspicious),
            f"{comparisons} comparisons in gateway/: {len(suspicious)} with ==, != or in on a "
            f"sign/sig/digest/token name; {digests} hmac.compare_digest calls")
    assert digests >= 4 and not suspicious, suspicious


def test_pip_audit_is_clean(figures):
    """Known vulnerabilities in the installed environment, from PyPI's advisory data."""
    command = [sys.executable, "-m", "pip_audit", "--skip-editable", "--progress-spinner",
               "off", "--format", "json", "--timeout", "20"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
        report = json.loads(result.stdout)
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        return unreachable(figures, 0, f"pip-audit gave no report ({type(exc).__name__})")
    deps = report["dependencies"]
    vulns = [f"{d['name']} {d['version']}: {v['id']} (fixed in {', '.join(v['fix_versions'])})"
             for d in deps for v in d.get("vulns", [])]
    skipped = [d["name"] for d in deps if "skip_reason" in d]
    audited = len(deps) - len(skipped)
    figure = (f"{audited}/{len(deps)} installed packages checked against PyPI's advisories: "
              f"{len(vulns)} known vulnerabilities")
    if vulns or not skipped:
        figures("pip-audit of the installed environment", len(deps), audited - len(vulns),
                figure)
        assert not vulns, vulns
        return None
    return unreachable(figures, len(deps), f"{figure}; {len(skipped)} not found by PyPI's "
                       f"per-version JSON API (e.g. {skipped[0]}), so no advisory data for them",
                       audited)


def unreachable(figures, runs, message, passed=0):
    """No verdict without the advisory data: a visible skip, never a pass.

    Unlike a browser or nginx, the advisory service is not something .ci/run can install:
    where PyPI's JSON API (or OSV) cannot be reached, as in this workplace's sandbox, the
    audit cannot be done at all, so CI reports it as skipped with the reason.
    """
    figures("pip-audit of the installed environment", runs, passed, message)
    pytest.skip(f"pip-audit could not run: {message}")
