"""The sandbox: simulators of the parties around the gateway (the provider's cabinet,
ChronoPay's hosted page, billing), on the gateway itself under /sandbox/.

The app factory calls `register` only when SANDBOX is on and imports nothing else of this
package, so the product runs without it. The simulators keep their books in a file of their
own (ledger.py), never in the gateway's store.
"""

import os

from . import billing, cabinet, chronopay
from .ledger import Ledger


def register(app):
    """Put the simulators' ledger on the app and their pages under /sandbox/."""
    app.extensions["sandbox_ledger"] = Ledger(os.path.join(app.instance_path, "sandbox.sqlite3"),
                                              app.config["DB_BUSY_TIMEOUT"])
    for module in (cabinet, chronopay, billing):
        app.register_blueprint(module.bp)
