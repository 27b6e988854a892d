"""The ops command line: tables for people, JSON for scripts, exit codes that mean something."""

import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import callback_fields, hand_off, pay_order, send_callback
from test_delivery import FakeBilling

from gateway.signing import verify_link


def run(runner, *args):
    return runner.invoke(args=[str(a) for a in args])


def test_payments_list_shows_paid_and_billed_apart(client, app, runner):
    app.extensions["deliverer"].http = FakeBilling(204)
    paid = pay_order(client, app)
    pending = hand_off(client, app, "250")
    result = run(runner, "payments", "list", "--json")
    rows = {row["order_id"]: row for row in json.loads(result.output)}
    assert result.exit_code == 0
    assert rows[paid["order_id"]]["status"] == "paid" and rows[paid["order_id"]]["billed_at"] \
        is None
    assert rows[pending["order_id"]]["status"] == "pending"
    app.extensions["deliverer"].drain()
    table = run(runner, "payments", "list", "--status", "paid").output
    assert paid["order_id"] in table and pending["order_id"] not in table
    assert "billed_at" in table.splitlines()[0] and "2025-11-28T" in table


def test_payments_list_filters(client, app, runner, clock):
    pay_order(client, app)
    clock.advance(86400 * 2)
    later = hand_off(client, app)
    rows = json.loads(run(runner, "payments", "list", "--since", "2025-11-29", "--json").output)
    assert [r["order_id"] for r in rows] == [later["order_id"]]
    assert json.loads(run(runner, "payments", "list", "--login", "nobody", "--json").output) == []
    send_callback(client, callback_fields(app, later, "70002", total="1.00"))
    rows = json.loads(run(runner, "payments", "list", "--status", "review", "--json").output)
    assert [r["order_id"] for r in rows] == [later["order_id"]]
    assert run(runner, "payments", "list", "--since", "yesterday").exit_code == 2


def test_payments_show_has_callbacks_events_and_attempts(client, app, runner):
    app.extensions["deliverer"].http = FakeBilling(500, 204)
    query = pay_order(client, app)
    app.extensions["deliverer"].drain()
    detail = json.loads(run(runner, "payments", "show", query["order_id"], "--json").output)
    assert detail["order"]["status"] == "paid"
    assert [c["verdict"] for c in detail["callbacks"]] == ["applied"]
    [event] = detail["events"]
    assert [a["outcome"] for a in event["attempts_made"]] == ["failed"]
    text = run(runner, "payments", "show", query["order_id"]).output
    assert "callbacks:" in text and "HTTP 500" in text


def test_unknown_order_exits_1(runner):
    result = run(runner, "payments", "show", "nope")
    assert result.exit_code == 1


def test_events_list_and_retry_of_dead_events(client, app, runner, store):
    app.extensions["deliverer"].http = FakeBilling(410)
    pay_order(client, app)
    app.extensions["deliverer"].drain()
    dead = json.loads(run(runner, "events", "list", "--dead", "--json").output)
    assert len(dead) == 1 and json.loads(run(runner, "events", "list", "--pending",
                                             "--json").output) == []
    result = run(runner, "events", "retry", "--dead")
    assert result.exit_code == 0 and "1 event(s)" in result.output
    assert app.extensions["deliverer"].drain() == {dead[0]["event_id"]: "delivered"}
    assert store.read().event(dead[0]["event_id"])["status"] == "delivered"
    assert run(runner, "events", "retry", dead[0]["event_id"]).exit_code == 1  # delivered
    assert run(runner, "events", "retry").exit_code == 2


def test_callbacks_list_rejected(client, app, runner):
    query = hand_off(client, app)
    send_callback(client, callback_fields(app, query), remote="10.9.9.9")
    send_callback(client, callback_fields(app, query))
    rows = json.loads(run(runner, "callbacks", "list", "--rejected", "--json").output)
    assert [r["verdict"] for r in rows] == ["forbidden_ip"]
    assert len(json.loads(run(runner, "callbacks", "list", "--json").output)) == 2


@pytest.mark.parametrize("amount", [None, "1000", "1000.50"])
def test_make_link_prints_a_link_the_gateway_accepts(app, runner, amount, clock):
    result = run(runner, "make-link", "dem001", "6", *([amount] if amount else []))
    assert result.exit_code == 0
    url = result.output.strip()
    assert url.startswith("https://pay.test/pay?login=dem001&account=6")
    args = parse_qs(urlsplit(url).query)
    link = verify_link(args, app.config["CABINET_SECRET"], clock(), app.config["LINK_MAX_AGE"])
    assert link.amount == (None if amount is None else f"{float(amount):.2f}")


@pytest.mark.parametrize("args", [("bad login", "6"), ("dem001", "x"), ("dem001", "6", "1e3")])
def test_make_link_refuses_bad_input(runner, args):
    assert run(runner, "make-link", *args).exit_code == 2


def test_deliver_once_exits_nonzero_while_billing_fails(client, app, runner):
    app.extensions["deliverer"].http = FakeBilling(500)
    pay_order(client, app)
    result = run(runner, "deliver", "--once")
    assert result.exit_code == 1 and "failed" in result.output


def test_no_chronopay_sign_appears_in_any_cli_output(client, app, runner):
    paid = pay_order(client, app)
    outputs = [run(runner, "callbacks", "list", "--json").output,
               run(runner, "callbacks", "list").output,
               run(runner, "payments", "show", paid["order_id"], "--json").output,
               run(runner, "payments", "show", paid["order_id"]).output]
    assert "sign=<redacted>" in outputs[0]
    for output in outputs:
        assert not re.search(r"[0-9a-f]{32}", output), output


@pytest.mark.parametrize(("args", "code"), [
    (("payments", "show", "nosuch"), 1), (("events", "retry", "nosuch"), 1),
    (("payments", "list", "--login", "nobody"), 0), (("callbacks", "list", "--rejected"), 0),
    (("events", "list", "--dead"), 0), (("payments", "list", "--since", "soon"), 2),
])
def test_no_match_exit_codes_are_the_readme_s(runner, args, code):
    assert run(runner, *args).exit_code == code


def test_listings_have_no_silent_row_cap(app, runner, store):
    # Today's ops see a page and are told there is more, never a quietly cut list.
    with store.write() as tx:
        for n in range(1003):
            tx.insert_order({"order_id": f"o{n:04}", "nonce": f"n{n}", "login": "dem001",
                             "account": "6", "amount": "10.00", "created_at": float(n)})
            tx.journal({"received_at": float(n), "remote_addr": "127.0.0.1", "body": "x",
                        "verdict": "malformed", "reason": "r", "order_id": None,
                        "transaction_id": None, "transaction_type": None})
    first = runner.invoke(args=["payments", "list", "--json"])
    assert len(json.loads(first.stdout)) == 1000
    assert "… and more (--offset 1000)" in first.stderr
    rest = runner.invoke(args=["payments", "list", "--json", "--offset", "1000"])
    assert len(json.loads(rest.stdout)) == 3 and "more" not in rest.stderr
    page = runner.invoke(args=["callbacks", "list", "--rejected", "--limit", "2", "--json"])
    assert [row["received_at"] for row in json.loads(page.stdout)] == [
        "1970-01-01T00:16:42Z", "1970-01-01T00:16:41Z"]
    assert "--offset 2" in page.stderr
    whole = runner.invoke(args=["callbacks", "list", "--limit", "5000", "--json"])
    assert len(json.loads(whole.stdout)) == 1003 and "more" not in whole.stderr
