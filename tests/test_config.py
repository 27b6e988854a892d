"""Start-up refuses configurations that could leak or lose money."""

import runpy

import pytest

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
    app = create_app(dict(production, SANDBOX=True,
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
