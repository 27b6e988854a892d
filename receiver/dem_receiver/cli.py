"""dem-receiver serve | reconcile, configured by environment variables."""
import logging
import os
import shlex
import sys

from .app import create_app
from .ledger import Ledger
from .utm5 import UTM5


def billing_from_env(env):
    """The UTM5 adapter the environment describes."""
    return UTM5(env.get("RECEIVER_UTM5_TOOL", "/netup/utm5/bin/utm5_payment_tool"),
                env.get("RECEIVER_UTM5_METHOD", "1"),
                shlex.split(env["RECEIVER_UTM5_LOOKUP"]),
                shlex.split(env.get("RECEIVER_UTM5_EXTRA_ARGS", "")))


def reconcile(ledger, billing, out):
    """Print every ledger row whose billing lookup disagrees; return their count."""
    bad = 0
    for ext, account, amount, state, payment_id in ledger.rows():
        found = billing.lookup(ext)
        if state != "applied" or found != payment_id:
            bad += 1
            print(f"{ext} {account} {amount} ledger={state}:{payment_id} billing={found}",
                  file=out)
    return bad


def main(argv=None, env=None):
    """Entry point of the dem-receiver command."""
    argv, env = sys.argv[1:] if argv is None else argv, os.environ if env is None else env
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    billing = billing_from_env(env)
    ledger = Ledger(env.get("RECEIVER_LEDGER", "/var/lib/dem-receiver/ledger.sqlite3"), billing)
    if argv[:1] == ["reconcile"]:
        return 1 if reconcile(ledger, billing, sys.stdout) else 0
    if argv[:1] == ["serve"]:
        import waitress
        app = create_app(env["RECEIVER_SECRET"], ledger)
        waitress.serve(app, listen=env.get("RECEIVER_LISTEN", "127.0.0.1:8090"), threads=4)
        return 0
    print("usage: dem-receiver serve | reconcile", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
