"""The ops command line: `dem-gateway <command>`; tables for people, --json for scripts.

Exit codes: 0 done (an empty list too), 1 unknown order or event, 2 bad usage or bad config.
"""

import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

import click
from flask import current_app
from flask.cli import AppGroup, FlaskGroup, with_appcontext

from .billing import iso
from .delivery import boot_id
from .errors import AmountError, ConfigError
from .money import format_wire, parse_wire
from .signing import ACCOUNT, LOGIN, make_link
from .states import ORDER_STATUSES

payments_cli = AppGroup("payments", help="Orders and what happened to them.")
events_cli = AppGroup("events", help="Billing events in the outbox.")
callbacks_cli = AppGroup("callbacks", help="The journal of ChronoPay callbacks.")
transactions_cli = AppGroup("transactions", help="ChronoPay transactions as recorded.")
TIMES = ("created_at", "updated_at", "paid_at", "billed_at", "received_at", "delivered_at",
         "next_attempt_at", "retry_until", "started_at", "finished_at", "lease_until")


# The service's config on a server installed as docs/operations.md says.
SYSTEM_CONFIG = "/etc/dem-gateway/config.py"


def build_app():
    """The app for a command, or one sentence and exit 2 when the configuration is refused."""
    from . import create_app

    try:
        return create_app()
    except ConfigError as exc:
        click.echo(f"dem-gateway: bad configuration: {exc}", err=True)
        sys.exit(2)


def main():
    """The `dem-gateway` console script: the gateway's commands with the service's config."""
    if not os.environ.get("GATEWAY_CONFIG") and os.path.exists(SYSTEM_CONFIG):
        os.environ["GATEWAY_CONFIG"] = SYSTEM_CONFIG
    FlaskGroup(create_app=build_app, add_version_option=False,
               load_dotenv=False).main(prog_name="dem-gateway")


def register(app):
    """Attach the gateway's commands to the app's CLI."""
    for command in (init_db, deliver, make_link_command, payments_cli, events_cli,
                    callbacks_cli, transactions_cli):
        app.cli.add_command(command)


def store():
    return current_app.extensions["store"]


# ChronoPay's sign in a journalled form body: a bearer-like value that stays out of any output.
SIGN = re.compile(r"(^|&)(sign=)[^&]*")


def redact(value):
    return SIGN.sub(r"\1\2<redacted>", value) if isinstance(value, str) else value


def readable(row):
    return {key: iso(value) if key in TIMES and isinstance(value, (int, float)) else
            redact(value) for key, value in row.items()}


def emit(rows, columns, as_json):
    """Print rows as JSON or as an aligned table of the named columns."""
    rows = [readable(row) for row in rows]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    cells = [[str(row.get(col) if row.get(col) is not None else "-") for col in columns]
             for row in rows]
    widths = [max([len(col)] + [len(line[i]) for line in cells]) for i, col in
              enumerate(columns)]
    click.echo("  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)))
    for line in cells:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    click.echo(f"({len(rows)} rows)")


@click.command("init-db")
@with_appcontext
def init_db():
    """Create the database schema (idempotent; the service also does it on start)."""
    store().init_schema()
    click.echo(f"schema ready in {store().path}")


@click.command("deliver")
@click.option("--once", is_flag=True, help="Attempt what is due now, then exit.")
@with_appcontext
def deliver(once):
    """Run a billing delivery worker in this process (any number may run at once)."""
    deliverer = current_app.extensions.get("deliverer")
    if deliverer is None:
        raise click.UsageError("BILLING_URL and BILLING_SECRET must be set.")
    if once:
        outcomes = deliverer.drain()
        click.echo(f"{len(outcomes)} attempted: " + json.dumps(outcomes))
        sys.exit(0 if all(o == "delivered" for o in outcomes.values()) else 1)
    click.echo(f"delivering to billing as {deliverer.name}; Ctrl-C stops")
    deliverer.run_forever()


@click.command("make-link")
@click.argument("login")
@click.argument("account")
@click.argument("amount", required=False)
@with_appcontext
def make_link_command(login, account, amount):
    """Print a signed cabinet link, to test the cabinet's integration."""
    cfg = current_app.config
    if not LOGIN.fullmatch(login) or not ACCOUNT.fullmatch(account):
        raise click.BadParameter("login is [A-Za-z0-9._@-]{1,64}, account 1-20 digits")
    try:
        amount = format_wire(parse_wire(amount)) if amount else None
    except AmountError as exc:
        raise click.BadParameter("amount is like 1000 or 1000.50") from exc
    expires = int(current_app.extensions["clock"]()) + cfg["LINK_MAX_AGE"]
    query = make_link(cfg["CABINET_SECRET"], login, account, amount, expires)
    click.echo(f"{cfg['PUBLIC_URL']}/pay?{urlencode(query)}")


def since_epoch(value):
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter("use YYYY-MM-DD or an ISO date-time") from exc
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def paged(command):
    """--limit and --offset on a listing, which says on stderr when more rows remain."""
    command = click.option("--offset", type=click.IntRange(min=0), default=0)(command)
    return click.option("--limit", type=click.IntRange(min=1), default=1000,
                        show_default=True)(command)


def say_more(rows, limit, offset):
    """Print a page of limit + 1 rows fetched: drop the extra one and say there is more."""
    if len(rows) > limit:
        click.echo(f"… and more (--offset {offset + limit})", err=True)  # --json stays whole
    return rows[:limit]


@payments_cli.command("list")
@click.option("--status", type=click.Choice([*ORDER_STATUSES, "review"]))
@click.option("--login")
@click.option("--since", help="YYYY-MM-DD (UTC)")
@click.option("--json", "as_json", is_flag=True)
@paged
def payments_list(status, login, since, as_json, limit, offset):
    """Orders, newest first: paid at ChronoPay and acknowledged by billing shown apart."""
    rows = store().read().orders(status=None if status == "review" else status, login=login,
                                 since=since_epoch(since), review=status == "review",
                                 limit=limit + 1, offset=offset)
    emit(rows[:limit], ("order_id", "login", "account", "amount", "status", "paid_at",
                        "billed_at", "review"), as_json)
    say_more(rows, limit, offset)


@payments_cli.command("show")
@click.argument("order_id")
@click.option("--json", "as_json", is_flag=True)
def payments_show(order_id, as_json):
    """One order with its callbacks, events and every delivery attempt."""
    tx = store().read()
    order = tx.order(order_id)
    if order is None:
        click.echo(f"no order {order_id}", err=True)
        sys.exit(1)
    events = tx.events(order_id=order_id)
    detail = {"order": readable(order),
              "callbacks": [readable(row) for row in tx.callbacks(order_id=order_id)],
              "events": [dict(readable(event), attempts_made=[
                  readable(a) for a in tx.attempts(event["event_id"])]) for event in events]}
    if as_json:
        click.echo(json.dumps(detail, ensure_ascii=False, indent=2))
        return
    for key, value in detail["order"].items():
        click.echo(f"{key:15} {value if value is not None else '-'}")
    click.echo("\ncallbacks:")
    emit(detail["callbacks"], ("id", "received_at", "verdict", "transaction_type",
                               "transaction_id", "reason"), False)
    for event in detail["events"]:
        click.echo(f"\nevent {event['event_id']} {event['type']}: {event['status']}, "
                   f"{event['attempts']} attempts, last error {event['last_error'] or '-'}")
        emit(event["attempts_made"], ("started_at", "finished_at", "worker", "http_status",
                                      "outcome", "error"), False)


@events_cli.command("list")
@click.option("--pending", "status", flag_value="pending")
@click.option("--dead", "status", flag_value="dead")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
@click.option("--json", "as_json", is_flag=True)
def events_list(status, limit, offset, as_json):
    """Billing events, newest first, a page at a time."""
    tx = store().read()
    rows = tx.events(status=status, limit=limit, offset=offset)
    emit(rows, ("event_id", "type", "order_id", "status", "attempts", "next_attempt_at",
                "last_error"), as_json)
    more = tx.count_events(status=status) - offset - len(rows)
    if more > 0:  # on stderr, so --json output stays one document
        click.echo(f"… and {more} more (--offset {offset + len(rows)})", err=True)


@events_cli.command("retry")
@click.argument("event_id", required=False)
@click.option("--dead", "status", flag_value="dead", help="Every dead event.")
@click.option("--pending", "status", flag_value="pending",
              help="Every pending event, due now.")
def events_retry(event_id, status):
    """Send an event (or every dead or pending one) again now, with a fresh retry window;
    an event being sent right now is left to its worker."""
    if bool(event_id) == bool(status):
        raise click.UsageError("give one EVENT, --dead or --pending")
    now = current_app.extensions["clock"]()
    window = current_app.config["BILLING_RETRY_FOR"]
    deliverer = current_app.extensions.get("deliverer")
    boot, mono = ((deliverer.boot, deliverer.monotonic()) if deliverer is not None
                  else (boot_id(), time.monotonic()))
    with store().write() as tx:
        queued, sending = tx.retry_events(now, now + window, boot, mono, event_id=event_id,
                                          status=status)
    if deliverer is not None and queued:
        deliverer.wake()
    if event_id and sending:
        click.echo(f"event {event_id} is being sent to billing right now; its outcome will "
                   "be recorded, retry it after that if it is not delivered", err=True)
        sys.exit(1)
    click.echo(f"{queued} event(s) queued for delivery"
               + (f"; {sending} being sent right now, left to their worker" if sending else ""))
    sys.exit(0 if queued or status else 1)


@callbacks_cli.command("list")
@click.option("--rejected", is_flag=True, help="Only callbacks that did not apply cleanly.")
@click.option("--json", "as_json", is_flag=True)
@paged
def callbacks_list(rejected, as_json, limit, offset):
    """ChronoPay callbacks as received, newest first, with their verdicts."""
    rows = store().read().callbacks(rejected=rejected, limit=limit + 1, offset=offset)
    emit(rows[:limit], ("id", "received_at", "remote_addr", "verdict", "order_id",
                        "transaction_type", "transaction_id", "reason"), as_json)
    say_more(rows, limit, offset)




@transactions_cli.command("accept-unsigned")
def transactions_accept_unsigned():
    """Accept the old transactions whose signed text no journal row restores, so the service
    starts; their captured signs could still be re-split, so review those orders first."""
    count = store().accept_unsigned()
    current_app.logger.warning("%d transactions without signed text accepted by ops", count)
    click.echo(f"{count} transaction(s) accepted without a signed text")
