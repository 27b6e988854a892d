"""`python -m gateway.nginx_allow`: the nginx allow list of the callback, from the service's
own CHRONOPAY_CALLBACK_IPS, so the two layers never disagree."""

import ipaddress
import os
import sys

from flask import Config

from . import ROOT
from . import config as config_layers
from .errors import ConfigError


def snippet(addresses):
    """nginx `allow` lines for the addresses, then `deny all;`."""
    lines = ["# Written by python -m gateway.nginx_allow from CHRONOPAY_CALLBACK_IPS."]
    for address in addresses:
        try:
            lines.append(f"allow {ipaddress.ip_address(str(address).strip())};")
        except ValueError as exc:
            raise ConfigError(
                f"CHRONOPAY_CALLBACK_IPS has {str(address)[:60]!r}, not an IP address.") from exc
    return "\n".join([*lines, "deny all;", ""])


def main():
    """Print the snippet for the configuration the service reads (GATEWAY_CONFIG, GATEWAY_*)."""
    instance = os.environ.get("GATEWAY_INSTANCE_PATH") or os.path.join(ROOT, "instance")
    config = Config(ROOT)
    try:
        config_layers.load(config, ROOT, instance)
        sys.stdout.write(snippet(config["CHRONOPAY_CALLBACK_IPS"]))
    except ConfigError as exc:
        sys.exit(f"gateway: {exc}")


if __name__ == "__main__":
    main()
