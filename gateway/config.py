"""Configuration in layers: defaults, a Python file, GATEWAY_* variables, test overrides."""

import hashlib
import hmac
import ipaddress
import json
import math
import os
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

# Keys that switch refusals off: only create_app's test_config may set them.
TEST_ONLY = ("TESTING", "DEBUG")
# GATEWAY_* variables that are not config keys: the file to read, and the test-only crash hook
# (gateway/faults.py; it can only kill the process, never weaken a check).
OWN_VARIABLES = ("GATEWAY_CONFIG", "GATEWAY_CRASH_AT", "GATEWAY_INSTANCE_PATH")

# Secrets that must be real outside tests and the sandbox.
SECRETS = ("SECRET_KEY", "CABINET_SECRET", "CHRONOPAY_SHARED_SECRET", "BILLING_SECRET")
MIN_SECRET_LENGTH = 32
# Files whose secret values are public and so never acceptable in production.
PUBLIC_SECRET_FILES = ("config.example.py", "config.sandbox.py")
# SHA-256 of every secret in PUBLIC_SECRET_FILES, kept in the package so the refusal holds
# however the service is installed; tests/test_config.py checks it matches the files.
PUBLIC_SECRET_HASHES = frozenset({
    "0b9a5826fd21538a2a08e2c36b31a7dc10c959063ece6ad80302544f387b603f",
    "8669e633d5bb4b56891ab08bf116d329b92566b5ba1df6ba73a62ca202ac93a6",
    "ba59fc1b8abf05a3cf3f0f64145d16b819d9d56a18e934fb9491d2e7b174c0e7",
    "acb3a613ce3a9212315754b27a4398e6e1282152bdde79ff9045bc8e6a27a70c",
    "8f80df26107cfd3d235f24fc0d814b76f31f1cb90d94748526d08cbc1496c238",
    "1242cfdfd79bb0a089f485473c7289b330afa80b6735715678346e986d6c0a14",
    "3b01d749550e9d54bfc6a68f4067f6dbe47910146985e25c8e219388f6622f77",
    "1d0606a7cf798d8532dc076ca76be1c0804f04c1ae1fc46c8bb5d1f94ea0d533",
})
SANDBOX_CHRONOPAY_PATH = "/sandbox/chronopay/"


def load(config, root_path, instance_path, test_config=None, environ=None):
    """Fill a Flask config object from every layer, then refuse an unsafe one."""
    environ = os.environ if environ is None else environ
    config.update(DEFAULTS)
    config["DATABASE_URL"] = "sqlite:///" + os.path.join(instance_path, "gateway.sqlite3")
    path = environ.get("GATEWAY_CONFIG") or os.path.join(instance_path, "config.py")
    if environ.get("GATEWAY_CONFIG") or os.path.exists(path):
        config.from_pyfile(os.path.abspath(path))
    for key in TEST_ONLY:
        if config.get(key):
            raise ConfigError(f"{key} cannot be set in a config file; remove it from {path}.")
    for key, raw in environ.items():
        if not key.startswith("GATEWAY_") or key in OWN_VARIABLES:
            continue
        name = key[len("GATEWAY_"):]
        if name not in DEFAULTS:
            raise ConfigError(f"{key} is not a setting the gateway knows; remove or fix it.")
        config[name] = coerce(name, raw, DEFAULTS.get(name))
    if test_config:
        config.update(test_config)
    validate(config)
    normalize(config)
    check(config)


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


def positive(value):
    return value > 0 and math.isfinite(value)


def amount(value):
    """A ruble amount as str, int or Decimal (never a float): > 0, 2 decimals, 12 digits."""
    if isinstance(value, (bool, float)):
        return False
    try:
        value = Decimal(str(value))
    except InvalidOperation:
        return False
    return (value.is_finite() and value > 0 and value.as_tuple().exponent >= -2
            and value < Decimal(10) ** 12)


def addresses(value):
    """A non-empty list of IP addresses."""
    if not isinstance(value, (list, tuple)) or not value:
        return False
    try:
        for item in value:
            ipaddress.ip_address(item)
    except ValueError:
        return False
    return True


def optional_str(value):
    return value is None or isinstance(value, str)


NUMBER = (int, float)
# One spec per key: the types accepted and a rule the value must pass (sentence after "must be").
SPECS = {
    "SECRET_KEY": ((str, type(None)), None, "a string"),
    "DATABASE_URL": ((str,), None, "a string"),
    "PUBLIC_URL": ((str, type(None)), None, "a string"),
    "CABINET_SECRET": ((str, type(None)), None, "a string"),
    "CABINET_URL": ((str, type(None)), None, "a string"),
    "LINK_MAX_AGE": ((int,), lambda v: v > 0, "an integer > 0"),
    "CHRONOPAY_URL": ((str,), None, "a string"),
    "CHRONOPAY_PRODUCT_ID": ((str, type(None)), None, "a string"),
    "CHRONOPAY_SHARED_SECRET": ((str, type(None)), None, "a string"),
    "CHRONOPAY_SIGN_ORDER_ID": ((bool,), None, "True or False"),
    "CHRONOPAY_CALLBACK_IPS": ((list, tuple, str), addresses,
                               "a non-empty list of IP addresses"),
    "AMOUNT_MIN": ((str, int, Decimal), amount, "> 0 with at most 2 decimals and 12 digits"),
    "AMOUNT_MAX": ((str, int, Decimal), amount, "> 0 with at most 2 decimals and 12 digits"),
    "SANDBOX": ((bool,), None, "True or False"),
    "LISTEN": ((str,), None, "a string"),
    "THREADS": ((int,), lambda v: 1 <= v <= 1024, "an integer from 1 to 1024"),
    "TRUSTED_PROXY": ((str, type(None)), None, "a string"),
    "BILLING_URL": ((str, type(None)), None, "a string"),
    "BILLING_SECRET": ((str, type(None)), None, "a string"),
    "BILLING_TIMEOUT": (NUMBER, positive, "a finite number of seconds > 0"),
    "BILLING_RETRY_BASE": (NUMBER, positive, "a finite number of seconds > 0"),
    "BILLING_RETRY_FOR": (NUMBER, positive, "a finite number of seconds > 0"),
    "BILLING_WORKER": ((bool,), None, "True or False"),
    "DB_BUSY_TIMEOUT": (NUMBER, positive, "a finite number of seconds > 0"),
    "MAX_CONTENT_LENGTH": ((int,), lambda v: 1024 <= v <= 16 * 1024 * 1024,
                           "an integer from 1024 to 16777216 bytes"),
    "PERMANENT_SESSION_LIFETIME": ((int,), lambda v: v > 0, "an integer > 0"),
    "LINK_MAX_ORDERS": ((int,), lambda v: v >= 1, "an integer >= 1"),
    "ORDER_REF_MAX_AGE": ((int,), lambda v: v > 0, "an integer > 0"),
    "RECENT_PAYMENT_WARNING": ((int,), lambda v: v >= 0, "an integer >= 0"),
    "CALLBACK_SAMPLE_CAP": ((int,), lambda v: v >= 0, "an integer >= 0"),
    "INSTANCE_PATH": ((str, type(None)), lambda v: v is None or os.path.isabs(v),
                      "an absolute path"),
    "UNIX_SOCKET": ((str, type(None)), lambda v: v is None or os.path.isabs(v),
                    "an absolute path"),
}


def validate(config):
    """Refuse a value of the wrong type or out of its range, naming the key."""
    for key, (types, rule, says) in SPECS.items():
        value = config.get(key)
        wrong = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if isinstance(value, str) and key == "CHRONOPAY_CALLBACK_IPS":
            value = coerce(key, value, [])
        if wrong or (rule is not None and not rule(value)):
            raise ConfigError(f"Set {key} to {says}; {value!r} is not.")
    if Decimal(str(config["AMOUNT_MIN"])) > Decimal(str(config["AMOUNT_MAX"])):
        raise ConfigError("Set AMOUNT_MIN to at most AMOUNT_MAX.")


def is_public(value):
    """Whether a secret is one of the published example values (by their SHA-256)."""
    digest = hashlib.sha256(str(value).encode()).hexdigest()
    return any(hmac.compare_digest(digest, known) for known in PUBLIC_SECRET_HASHES)


def local(url):
    return urlsplit(url or "").hostname in ("127.0.0.1", "localhost", "::1")


def check(config):
    """Refuse to start with a configuration that could lose or leak money."""
    if config.get("SANDBOX"):
        expected = (config.get("PUBLIC_URL") or "") + SANDBOX_CHRONOPAY_PATH
        if not config.get("PUBLIC_URL") or config["CHRONOPAY_URL"] != expected:
            raise ConfigError(
                f"SANDBOX is on, so CHRONOPAY_URL must be this gateway's simulator: {expected}"
            )
        own_billing = config["PUBLIC_URL"] + "/sandbox/billing/"
        billing_url = config.get("BILLING_URL")
        # A loopback receiver (the test suite's) never leaves the machine either.
        if billing_url not in (None, "", own_billing) and not local(billing_url):
            raise ConfigError(
                f"SANDBOX is on, so BILLING_URL must be unset or this gateway's: {own_billing}"
            )
    if config.get("TESTING"):
        return
    if config.get("SANDBOX") and local(config.get("PUBLIC_URL")):
        return
    for key in SECRETS:
        value = config.get(key)
        if not value:
            raise ConfigError(f"Set {key}: it is missing.")
        if len(str(value)) < MIN_SECRET_LENGTH:
            raise ConfigError(f"Set {key} to at least {MIN_SECRET_LENGTH} random characters.")
        if is_public(value):
            raise ConfigError(f"Set {key} to a value of your own, not the example's.")
    for key in ("CHRONOPAY_PRODUCT_ID", "CABINET_URL", "BILLING_URL"):
        if not config.get(key):
            raise ConfigError(f"Set {key}: it is missing.")
    if urlsplit(config.get("PUBLIC_URL") or "").scheme != "https":
        raise ConfigError("Set PUBLIC_URL to the gateway's external https:// address.")
    if urlsplit(config["CHRONOPAY_URL"]).scheme != "https":
        raise ConfigError("Set CHRONOPAY_URL to an https:// address.")
