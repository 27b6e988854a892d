"""The WSGI app: verify, de-duplicate in the ledger, answer 2xx only after the commit."""
import json
import logging

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from .ledger import BillingFailed, Conflict

log = logging.getLogger("dem_receiver")
MONEY_TYPES = ("payment.succeeded", "payment.refunded", "payment.chargeback")


def create_app(secret, ledger):
    """A WSGI callable that applies the gateway's signed events to the ledger."""
    webhook = Webhook(secret)

    def app(environ, start_response):
        status = handle(webhook, ledger, environ)
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]
    return app


def handle(webhook, ledger, environ):
    """The HTTP status for one request."""
    if environ.get("REQUEST_METHOD") != "POST":
        return "405 Method Not Allowed"
    try:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return "400 Bad Request"
    headers = {name: environ.get("HTTP_" + name.upper().replace("-", "_"), "")
               for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    try:
        event = webhook.verify(body, headers)
    except (WebhookVerificationError, ValueError):
        log.warning("refused: bad signature for webhook-id %r", headers["webhook-id"][:80])
        return "401 Unauthorized"
    return apply(ledger, event, headers["webhook-id"])


def apply(ledger, event, webhook_id):
    """The status for a verified event."""
    kind = event.get("type") if isinstance(event, dict) else None
    if kind == "ping":
        return "204 No Content"
    try:
        if kind not in MONEY_TYPES:
            raise KeyError(kind)
        payment_id = ledger.apply(event, webhook_id)
    except (KeyError, TypeError, ArithmeticError, json.JSONDecodeError):
        log.warning("refused: malformed event %s", webhook_id)
        return "400 Bad Request"
    except Conflict as exc:
        log.error("refused: %s", exc)
        return "409 Conflict"
    except BillingFailed as exc:
        log.error("billing failed for %s: %s", webhook_id, exc)
        return "503 Service Unavailable"
    log.info("applied %s %s as payment %s", kind, webhook_id, payment_id)
    return "204 No Content"
