"""Configuration in layers: defaults, a Python file, GATEWAY_* variables, test overrides."""

import json
import os
import runpy
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from .errors import ConfigError

DEFAULTS = {
    "SECRET_KEY": None,
    "DATABASE_URL": None,
    "PUBLIC_URL": None,
    "CABINET_SECRET": None,
    "CABINET_URL": None,
    "LINK_MAX_AGE": 1800,
    "LINK_MAX_ORDERS": 5,
    "ORDER_REF_MAX_AGE": 2592000,
    "RECENT_PAYMENT_WARNING": 3600,
    "CHRONOPAY_URL": "https://payments.chronopay.com/",
    "CHRONOPAY_PRODUCT_ID": None,
    "CHRONOPAY_SHARED_SECRET": None,
    "CHRONOPAY_SIGN_ORDER_ID": True,
    "CHRONOPAY_CALLBACK_IPS": ["93.174.51.230"],
    "AMOUNT_MIN": Decimal("10.00"),
    "AMOUNT_MAX": Decimal("15000.00"),
    "SANDBOX": False,
    "LISTEN": "127.0.0.1:8080",
    "THREADS": 8,
    "TRUSTED_PROXY": None,
    "BILLING_URL": None,
    "BILLING_SECRET": None,
    "BILLING_TIMEOUT": 10.0,
    "BILLING_RETRY_BASE": 10.0,
    "BILLING_RETRY_FOR": 3 * 24 * 3600.0,
    "BILLING_WORKER": True,
    "DB_BUSY_TIMEOUT": 30,
    "MAX_CONTENT_LENGTH": 64 * 1024,
    "PERMANENT_SESSION_LIFETIME": 3600,
    "CALLBACK_SAMPLE_CAP": 100,
    "INSTANCE_PATH": None,
    "UNIX_SOCKET": None,
}

# Secrets that must be real outside tests and the sandbox.
SECRETS = ("SECRET_KEY", "CABINET_SECRET", "CHRONOPAY_SHARED_SECRET", "BILLING_SECRET")
MIN_SECRET_LENGTH = 32
# Files whose secret values are public and so never acceptable in production.
PUBLIC_SECRET_FILES = ("config.example.py", "config.sandbox.py")
SANDBOX_CHRONOPAY_PATH = "/sandbox/chronopay/"


def load(config, root_path, instance_path, test_config=None, environ=None):
    """Fill a Flask config object from every layer, then refuse an unsafe one."""
    environ = os.environ if environ is None else environ
    config.update(DEFAULTS)
    config["DATABASE_URL"] = "sqlite:///" + os.path.join(instance_path, "gateway.sqlite3")
    path = environ.get("GATEWAY_CONFIG") or os.path.join(instance_path, "config.py")
    if environ.get("GATEWAY_CONFIG") or os.path.exists(path):
        config.from_pyfile(os.path.abspath(path))
    for key, raw in environ.items():
        if key.startswith("GATEWAY_") and key != "GATEWAY_CONFIG":
            name = key[len("GATEWAY_"):]
            config[name] = coerce(name, raw, DEFAULTS.get(name))
    if test_config:
        config.update(test_config)
    normalize(config)
    check(config, public_secret_values(root_path))


def coerce(name, raw, default):
    """Turn an environment string into the type of the key's default."""
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):  # seconds, never money
            return float(raw)
        if isinstance(default, Decimal):
            return Decimal(raw)
        if isinstance(default, list):
            raw = raw.strip()
            if raw.startswith("["):
                return [str(item) for item in json.loads(raw)]
            return [item.strip() for item in raw.split(",") if item.strip()]
    except (ValueError, InvalidOperation) as exc:
        raise ConfigError(f"GATEWAY_{name} is not a valid value for {name}.") from exc
    return raw


def normalize(config):
    """Bring keys that may come as plain strings or numbers into their working types."""
    for key in ("AMOUNT_MIN", "AMOUNT_MAX"):
        config[key] = Decimal(str(config[key])).quantize(Decimal("0.01"))
    if config.get("PUBLIC_URL"):
        config["PUBLIC_URL"] = config["PUBLIC_URL"].rstrip("/")
        # Werkzeug builds its own redirects (a doubled slash, a missing trailing one) from the
        # Host header unless SERVER_NAME is set: with it they stay on our address.
        config["SERVER_NAME"] = config.get("SERVER_NAME") or urlsplit(config["PUBLIC_URL"]).netloc
    if isinstance(config["CHRONOPAY_CALLBACK_IPS"], str):
        config["CHRONOPAY_CALLBACK_IPS"] = coerce(
            "CHRONOPAY_CALLBACK_IPS", config["CHRONOPAY_CALLBACK_IPS"], []
        )
    secure = (config.get("PUBLIC_URL") or "").startswith("https://")
    config["SESSION_COOKIE_SECURE"] = secure
    config["SESSION_COOKIE_HTTPONLY"] = True
    config["SESSION_COOKIE_SAMESITE"] = "Lax"
    config.setdefault("WTF_CSRF_TIME_LIMIT", 3600)


def public_secret_values(root_path):
    """Read the secret values that ship in the repository's example configs."""
    values = set()
    for name in PUBLIC_SECRET_FILES:
        path = os.path.join(root_path, name)
        if not os.path.exists(path):
            continue
        scope = runpy.run_path(path)
        values.update(str(scope[key]) for key in SECRETS if scope.get(key))
    return values


def check(config, public_values):
    """Refuse to start with a configuration that could lose or leak money."""
    if config.get("SANDBOX"):
        expected = (config.get("PUBLIC_URL") or "") + SANDBOX_CHRONOPAY_PATH
        if not config.get("PUBLIC_URL") or config["CHRONOPAY_URL"] != expected:
            raise ConfigError(
                f"SANDBOX is on, so CHRONOPAY_URL must be this gateway's simulator: {expected}"
            )
    if config.get("TESTING") or config.get("SANDBOX"):
        return
    for key in SECRETS:
        value = config.get(key)
        if not value:
            raise ConfigError(f"Set {key}: it is missing.")
        if len(str(value)) < MIN_SECRET_LENGTH:
            raise ConfigError(f"Set {key} to at least {MIN_SECRET_LENGTH} random characters.")
        if str(value) in public_values:
            raise ConfigError(f"Set {key} to a value of your own, not the example's.")
    for key in ("CHRONOPAY_PRODUCT_ID", "CABINET_URL", "BILLING_URL"):
        if not config.get(key):
            raise ConfigError(f"Set {key}: it is missing.")
    if urlsplit(config.get("PUBLIC_URL") or "").scheme != "https":
        raise ConfigError("Set PUBLIC_URL to the gateway's external https:// address.")
    if urlsplit(config["CHRONOPAY_URL"]).scheme != "https":
        raise ConfigError("Set CHRONOPAY_URL to an https:// address.")
