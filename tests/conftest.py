"""Fixtures: the app with a clock we move, its client and CLI runner, and "pay an order"."""

import itertools
import logging
import os
import re
import runpy
import socket
import subprocess
import sys
import time
from html import unescape
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from gateway import chronopay, create_app
from gateway.signing import make_link
from gateway.store import Store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOW = 1_764_300_000.0
SECRETS = {
    "SECRET_KEY": "test-secret-key-0123456789abcdef0123456789",
    "CABINET_SECRET": "test-cabinet-secret-0123456789abcdef012345",
    "CHRONOPAY_SHARED_SECRET": "test-chronopay-sharedsec-0123456789abcdef",
    "BILLING_SECRET": "whsec_dGVzdC1iaWxsaW5nLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm",
}
PRODUCT = "001234-0001-0001"


# What must never appear in a log line: a ChronoPay sign (32 hex), a link signature (64 hex),
# a Standard Webhooks signature, and (checked apart) every configured secret value. A hex
# digest has letters and digits both (all-digit ids that long are someone's input, not ours).
SIGNATURE = re.compile(r"(?<![0-9a-f])(?=[0-9]*[a-f])(?=[a-f]*[0-9])(?:[0-9a-f]{64}|[0-9a-f]{32})"
                       r"(?![0-9a-f])|v1,[\w+/]{43}=")
SECRET_KEYS = ("SECRET_KEY", "CABINET_SECRET", "CHRONOPAY_SHARED_SECRET", "BILLING_SECRET")


def config_secrets(path):
    """The secret values a config file sets."""
    scope = runpy.run_path(path)
    return {str(scope[key]) for key in SECRET_KEYS if scope.get(key)}


KNOWN_SECRETS = set(SECRETS.values()).union(
    *(config_secrets(os.path.join(ROOT, name)) for name in ("config.sandbox.py",
                                                           "config.example.py")))


def leaks(text, secrets=()):
    """Secret values and signature-shaped strings found in log text."""
    return [s for s in {*KNOWN_SECRETS, *secrets} if s and s in text] + SIGNATURE.findall(text)


@pytest.fixture(autouse=True)
def no_secret_in_logs(caplog):
    """Every test of the suite: no log line may carry a secret, a sign or a signature."""
    caplog.set_level(logging.INFO)
    yield
    records = [r for when in ("setup", "call") for r in caplog.get_records(when)]
    text = "\n".join(logging.Formatter("%(name)s %(message)s").format(r) for r in records)
    found = leaks(text)
    assert not found, f"a log line carries a secret or signature: {found[:3]}"


class Clock:
    """A clock the tests move by hand."""

    def __init__(self, now=NOW):
        self.now = now
        self.mono = 1000.0  # time.monotonic()'s stand-in: moves with advance, not with step

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds
        self.mono += seconds

    def monotonic(self):
        return self.mono

    def step(self, seconds):
        """The wall clock jumps (NTP, an operator); monotonic time does not."""
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def config(tmp_path, clock):
    return dict(
        SECRETS,
        TESTING=True,
        CLOCK=clock,
        MONOTONIC=clock.monotonic,
        DATABASE_URL=f"sqlite:///{tmp_path}/gateway.sqlite3",
        PUBLIC_URL="https://pay.test",
        CABINET_URL="https://cabinet.test/",
        CHRONOPAY_URL="https://payments.chronopay.com/",
        CHRONOPAY_PRODUCT_ID=PRODUCT,
        CHRONOPAY_CALLBACK_IPS=["127.0.0.1"],
        BILLING_URL="https://billing.test/hook",
        BILLING_WORKER=False,
    )


@pytest.fixture
def app(config):
    app = create_app(config)
    yield app
    app.extensions["store"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def store(app):
    return app.extensions["store"]


@pytest.fixture
def bare_store(tmp_path):
    """A store of its own, without an app: for the service-level and query tests."""
    store = Store(f"sqlite:///{tmp_path}/gateway.sqlite3", busy_timeout=5)
    store.init_schema()
    yield store
    store.close()


_LINKS = itertools.count()


def link(app, login="dem001", account="6", amount="1000.00", expires=None, tamper=None):
    """A signed cabinet link for the app, as the cabinet makes it; tamper edits it after.
    Each call is a new link (as each «Новый платеж» in the cabinet is), so tests that pay
    many orders do not meet LINK_MAX_ORDERS."""
    if expires is None:
        expires = int(app.extensions["clock"]() + 600) - next(_LINKS) % 300
    query = make_link(app.config["CABINET_SECRET"], login, account, amount, expires)
    query.update(tamper or {})
    return "/pay?" + urlencode(query)


def hidden(html, name):
    """The value of a named input in a page."""
    match = re.search(rf'name="{name}"[^>]*value="([^"]*)"', html) or re.search(
        rf'value="([^"]*)"[^>]*name="{name}"', html)
    assert match, f"no input {name!r} in page"
    return unescape(match.group(1))


def confirm_page(client, app, amount="1000.00"):
    """Open a link that carries an amount; returns the confirmation page's form fields."""
    page = client.get(link(app, amount=amount)).get_data(as_text=True)
    fields = {"csrf_token": hidden(page, "csrf_token"), "token": hidden(page, "token")}
    if 'name="again"' in page:  # the account paid recently: tests paying again mean it
        fields["again"] = "y"
    return fields


def hand_off(client, app, amount="1000.00"):
    """Confirm a payment; returns ChronoPay's query as a dict of single values."""
    response = client.post("/pay/confirm", data=confirm_page(client, app, amount))
    assert response.status_code == 303, response.get_data(as_text=True)
    location = response.headers["Location"]
    assert location.startswith(app.config["CHRONOPAY_URL"])
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


def callback_fields(app, query, transaction_id="70001", transaction_type="Purchase",
                    total=None, **override):
    """A callback ChronoPay would send for a hand-off query, correctly signed."""
    total = query["product_price"] if total is None else total
    fields = {
        "transaction_type": transaction_type, "transaction_id": transaction_id,
        "customer_id": "c-42", "total": total, "currency": "RUB",
        "order_id": query["order_id"], "product_id": query["product_id"], "site_id": "1",
        "email": "payer@example.ru", "country": "RUS", "creditcardnumber": "411111XXXXXX1111",
    }
    fields.update(override)
    fields["sign"] = chronopay.callback_sign(
        app.config["CHRONOPAY_SHARED_SECRET"], fields["customer_id"], fields["transaction_id"],
        fields["transaction_type"], fields["total"])
    return fields


def send_callback(client, fields, remote="127.0.0.1"):
    return client.post("/chronopay/callback", data=fields,
                       environ_base={"REMOTE_ADDR": remote})


def pay_order(client, app, amount="1000.00", transaction_id="70001"):
    """Hand off and have ChronoPay call back a purchase; returns the hand-off query."""
    query = hand_off(client, app, amount)
    response = send_callback(client, callback_fields(app, query, transaction_id))
    assert response.status_code == 200
    return query


def missing_component(message):
    """A real component a test needs is absent: skip, saying how to install it, except under
    CI=true, where .ci/run installs it and a skip would hide a test that never ran."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true, so this is a failure, not a skip)")
    pytest.skip(message)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """The gateway as ops run it: `python wsgi.py` under waitress on a loopback port."""

    def __init__(self, tmp_path, env=None, config_file="config.sandbox.py", command=None):
        self.port = free_port()
        self.command = command or [sys.executable, os.path.join(ROOT, "wsgi.py")]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"server-{self.port}.log"
        self.env = dict(
            os.environ,
            GATEWAY_CONFIG=os.path.join(ROOT, config_file),
            GATEWAY_PUBLIC_URL=self.url,
            GATEWAY_CHRONOPAY_URL=self.url + "/sandbox/chronopay/",
            GATEWAY_CABINET_URL=self.url + "/sandbox/cabinet/",
            GATEWAY_BILLING_URL=self.url + "/sandbox/billing/",
            GATEWAY_DATABASE_URL=f"sqlite:///{tmp_path}/live.sqlite3",
            # The state directory (the sandbox's own ledger is there), never the checkout's.
            GATEWAY_INSTANCE_PATH=str(tmp_path / "instance"),
            LISTEN=f"127.0.0.1:{self.port}",
            PYTHONUNBUFFERED="1",
            # Live tests pay many orders from links made in one second (one link to us);
            # the limit itself is tested in-process (tests/test_pay.py).
            GATEWAY_LINK_MAX_ORDERS="100000",
        )
        self.env.update(env or {})
        self.process = None

    def start(self):
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [part.format(port=self.port) for part in self.command], cwd=ROOT, env=self.env,
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()}")
            try:
                requests.get(self.url + "/sandbox/cabinet/", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def stop(self, kill=False):
        if self.process and self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
            self.process.wait(10)
        self.log.close()
        own = {v for k, v in self.env.items() if "SECRET" in k and k.startswith("GATEWAY_")}
        if self.env.get("GATEWAY_CONFIG"):
            own |= config_secrets(self.env["GATEWAY_CONFIG"])
        found = leaks(self.output(), own)
        assert not found, f"the server's log carries a secret or signature: {found[:3]}"

    def output(self):
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def live_server(tmp_path):
    server = LiveServer(tmp_path).start()
    yield server
    server.stop()
