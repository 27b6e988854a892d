"""Start-up refuses configurations that could leak or lose money."""

import hashlib
import os
import runpy
import subprocess
import sys
from decimal import Decimal

import pytest

from gateway import config as config_layers
from gateway import create_app
from gateway.errors import ConfigError

GOOD = {
    "SECRET_KEY": "s" * 40, "CABINET_SECRET": "c" * 40, "CHRONOPAY_SHARED_SECRET": "x" * 40,
    "BILLING_SECRET": "whsec_" + "A" * 40, "PUBLIC_URL": "https://pay.dem.ru",
    "CABINET_URL": "https://cabinet.dem.ru/", "CHRONOPAY_PRODUCT_ID": "001234-0001-0001",
    "BILLING_URL": "https://billing.dem.ru/hook", "BILLING_WORKER": False,
}


@pytest.fixture
def production(tmp_path, monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("GATEWAY_"):
            monkeypatch.delenv(key)
    return dict(GOOD, DATABASE_URL=f"sqlite:///{tmp_path}/p.sqlite3")


def test_a_complete_production_config_starts(production):
    assert create_app(production).config["SESSION_COOKIE_SECURE"] is True


@pytest.mark.parametrize("key", ["SECRET_KEY", "CABINET_SECRET", "CHRONOPAY_SHARED_SECRET",
                                 "BILLING_SECRET"])
def test_missing_short_or_example_secret_stops_the_start(production, key):
    with pytest.raises(ConfigError, match=f"Set {key}"):
        create_app(dict(production, **{key: None}))
    with pytest.raises(ConfigError, match=f"Set {key}.*32"):
        create_app(dict(production, **{key: "short"}))
    scope = runpy.run_path("config.example.py")
    with pytest.raises(ConfigError, match=f"Set {key}.*not the example"):
        create_app(dict(production, **{key: scope[key]}))


def test_sandbox_secrets_are_refused_in_production(production):
    scope = runpy.run_path("config.sandbox.py")
    with pytest.raises(ConfigError, match="not the example"):
        create_app(dict(production, SECRET_KEY=scope["SECRET_KEY"]))


def test_public_url_must_be_https(production):
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        create_app(dict(production, PUBLIC_URL="http://pay.dem.ru"))


def test_sandbox_must_point_at_its_own_simulator(production):
    with pytest.raises(ConfigError, match="SANDBOX"):
        create_app(dict(production, SANDBOX=True))
    app = create_app(dict(production, SANDBOX=True, BILLING_URL="https://pay.dem.ru/sandbox/billing/",
                          CHRONOPAY_URL="https://pay.dem.ru/sandbox/chronopay/"))
    assert app.config["SANDBOX"]


def test_environment_overrides_the_file(production, monkeypatch, tmp_path):
    path = tmp_path / "conf.py"
    path.write_text('AMOUNT_MAX = "500.00"\nLINK_MAX_AGE = 60\n')
    monkeypatch.setenv("GATEWAY_CONFIG", str(path))
    monkeypatch.setenv("GATEWAY_LINK_MAX_AGE", "120")
    monkeypatch.setenv("GATEWAY_CHRONOPAY_CALLBACK_IPS", "1.2.3.4, 5.6.7.8")
    monkeypatch.setenv("GATEWAY_CHRONOPAY_SIGN_ORDER_ID", "false")
    app = create_app(production)
    assert str(app.config["AMOUNT_MAX"]) == "500.00"
    assert app.config["LINK_MAX_AGE"] == 120
    assert app.config["CHRONOPAY_CALLBACK_IPS"] == ["1.2.3.4", "5.6.7.8"]
    assert app.config["CHRONOPAY_SIGN_ORDER_ID"] is False


def test_bad_environment_value_names_the_key(production, monkeypatch):
    monkeypatch.setenv("GATEWAY_LINK_MAX_AGE", "soon")
    with pytest.raises(ConfigError, match="GATEWAY_LINK_MAX_AGE"):
        create_app(production)


def test_init_db_command(production):
    app = create_app(production)
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0 and "schema ready" in result.output


def test_signed_session_is_accepted_for_an_hour_not_flasks_month(production):
    # Flask already holds a 31-day PERMANENT_SESSION_LIFETIME, so a setdefault never applied;
    # Flask checks every session cookie's signature age against it, permanent or not.
    app = create_app(production)
    assert app.permanent_session_lifetime.total_seconds() == 3600
    assert app.config["WTF_CSRF_TIME_LIMIT"] == 3600


def test_every_key_has_a_spec():
    assert set(config_layers.DEFAULTS) == set(config_layers.SPECS)


@pytest.mark.parametrize(("key", "value"), [
    ("BILLING_TIMEOUT", 0), ("BILLING_TIMEOUT", float("inf")), ("BILLING_TIMEOUT", float("nan")),
    ("BILLING_RETRY_BASE", 0), ("BILLING_RETRY_FOR", -1), ("DB_BUSY_TIMEOUT", 0),
    ("LINK_MAX_AGE", 0), ("THREADS", 0), ("MAX_CONTENT_LENGTH", 10),
    ("MAX_CONTENT_LENGTH", 10**12), ("PERMANENT_SESSION_LIFETIME", 0),
    ("AMOUNT_MIN", "0"), ("AMOUNT_MIN", 10.0), ("AMOUNT_MIN", "1.001"),
    ("AMOUNT_MAX", "1" * 13), ("CHRONOPAY_CALLBACK_IPS", []),
    ("CHRONOPAY_CALLBACK_IPS", ["not-an-ip"]), ("BILLING_WORKER", "false"),
    ("LINK_MAX_ORDERS", 0), ("ORDER_REF_MAX_AGE", 0), ("RECENT_PAYMENT_WARNING", -1),
])
def test_out_of_range_value_is_refused_naming_the_key(production, key, value):
    with pytest.raises(ConfigError, match=f"Set {key} "):
        create_app(dict(production, **{key: value}))


def test_amounts_accept_str_int_and_decimal_but_min_not_above_max(production):
    app = create_app(dict(production, AMOUNT_MIN=5, AMOUNT_MAX=Decimal("100.5")))
    assert app.config["AMOUNT_MAX"] == Decimal("100.50")
    with pytest.raises(ConfigError, match="AMOUNT_MIN"):
        create_app(dict(production, AMOUNT_MIN="200", AMOUNT_MAX="100"))


def test_float_amount_from_a_config_file_is_refused(production, monkeypatch, tmp_path):
    path = tmp_path / "conf.py"
    path.write_text("AMOUNT_MIN = 10.0\n")
    monkeypatch.setenv("GATEWAY_CONFIG", str(path))
    with pytest.raises(ConfigError, match="Set AMOUNT_MIN"):
        create_app(production)


@pytest.mark.parametrize("name", ["GATEWAY_LINK_MAX_AG", "GATEWAY_TESTING", "GATEWAY_DEBUG"])
def test_unknown_or_test_only_variable_is_refused(production, monkeypatch, name):
    monkeypatch.setenv(name, "false")
    with pytest.raises(ConfigError, match=name):
        create_app(production)


@pytest.mark.parametrize("line", ["TESTING = True", "DEBUG = True"])
def test_testing_or_debug_in_a_config_file_is_refused(production, monkeypatch, tmp_path, line):
    path = tmp_path / "conf.py"
    path.write_text(line + "\n")
    monkeypatch.setenv("GATEWAY_CONFIG", str(path))
    with pytest.raises(ConfigError, match=line.split()[0]):
        create_app(production)


@pytest.mark.parametrize("value", ["false", "true"])
def test_wsgi_with_gateway_testing_and_the_example_config_refuses(tmp_path, value):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_CONFIG=os.path.abspath("config.example.py"), GATEWAY_TESTING=value,
               GATEWAY_DATABASE_URL=f"sqlite:///{tmp_path}/w.sqlite3")
    done = subprocess.run([sys.executable, "wsgi.py"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "GATEWAY_TESTING is not a setting" in done.stderr and "Traceback" not in done.stderr


def test_public_secret_hashes_match_the_shipped_files():
    hashes = set()
    for name in config_layers.PUBLIC_SECRET_FILES:
        scope = runpy.run_path(name)
        hashes |= {hashlib.sha256(scope[k].encode()).hexdigest() for k in config_layers.SECRETS}
    assert hashes == config_layers.PUBLIC_SECRET_HASHES


def test_example_secrets_are_refused_without_the_example_files(production, monkeypatch):
    # An installed package has no config.example.py next to it: the refusal must not need it.
    monkeypatch.setattr(config_layers, "PUBLIC_SECRET_FILES", ())
    scope = runpy.run_path("config.example.py")
    with pytest.raises(ConfigError, match="not the example"):
        create_app(dict(production, SECRET_KEY=scope["SECRET_KEY"]))


def test_sandbox_refuses_a_real_billing(production):
    with pytest.raises(ConfigError, match="BILLING_URL"):
        create_app(dict(production, SANDBOX=True,
                        CHRONOPAY_URL="https://pay.dem.ru/sandbox/chronopay/"))


def test_sandbox_on_a_public_address_still_needs_real_secrets(production):
    scope = runpy.run_path("config.sandbox.py")
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app(dict(production, SANDBOX=True, BILLING_URL="https://pay.dem.ru/sandbox/billing/",
                        SECRET_KEY=scope["SECRET_KEY"],
                        CHRONOPAY_URL="https://pay.dem.ru/sandbox/chronopay/"))


def test_chronopay_url_must_be_https(production):
    with pytest.raises(ConfigError, match="CHRONOPAY_URL"):
        create_app(dict(production, CHRONOPAY_URL="http://payments.chronopay.com/"))
