"""The whole sandbox flow through `python wsgi.py` under waitress, driven by requests."""

import re
import sqlite3
import time
from decimal import Decimal
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from conftest import LiveServer

pytestmark = pytest.mark.slow


def field(html, name):
    match = re.search(rf'name="{name}"[^>]*value="([^"]*)"', html) or re.search(
        rf'value="([^"]*)"[^>]*name="{name}"', html)
    assert match, name
    return unescape(match.group(1))


def open_cabinet_payment(session, server, amount):
    page = session.get(server.url + "/sandbox/cabinet/", timeout=10).text
    assert "dem001" in page and "Тестовый режим" in page
    return session.post(server.url + "/sandbox/cabinet/", timeout=10, data={
        "csrf_token": field(page, "csrf_token"), "amount": amount})


def pay(session, server, card):
    confirm = open_cabinet_payment(session, server, "1000")
    assert "Заплатить" in confirm.text and "1\u00a0000,00" in confirm.text
    fields = {"csrf_token": field(confirm.text, "csrf_token"),
              "token": field(confirm.text, "token")}
    if 'name="again"' in confirm.text:  # paid a moment ago: this test pays again on purpose
        fields["again"] = "y"
    handoff = session.post(server.url + "/pay/confirm", timeout=10, data=fields)
    assert "СТРАНИЦА ОПЛАТЫ" in handoff.text
    assert handoff.url.startswith(server.url + "/sandbox/chronopay/?")
    result = session.post(server.url + "/sandbox/chronopay/pay", timeout=10, data={
        "csrf_token": field(handoff.text, "csrf_token"),
        "handoff": field(handoff.text, "handoff"), "email": "dem001@example.ru",
        "country": "RUS", "card": card, "expiry": "12/30", "cvc": "123"})
    return handoff, result


def test_paying_card_ends_on_payment_accepted(live_server):
    session = requests.Session()
    _, result = pay(session, live_server, "4111 1111 1111 1111")
    assert result.status_code == 200
    assert "/pay/success/" in result.url and "Платеж принят" in result.text


def test_declined_card_ends_on_payment_failed(live_server):
    session = requests.Session()
    _, result = pay(session, live_server, "4000 0000 0000 0002")
    assert "/pay/decline/" in result.url and "Платеж не прошел" in result.text


def test_simulator_refuses_a_tampered_handoff(live_server):
    session = requests.Session()
    confirm = open_cabinet_payment(session, live_server, "1000")
    response = session.post(live_server.url + "/pay/confirm", timeout=10, allow_redirects=False,
                            data={"csrf_token": field(confirm.text, "csrf_token"),
                                  "token": field(confirm.text, "token")})
    location = response.headers["Location"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    query["product_price"] = "1.00"
    page = session.get(live_server.url + "/sandbox/chronopay/", params=query, timeout=10)
    assert page.status_code == 400 and "Неверная подпись" in page.text


def test_amount_typed_in_the_cabinet_wrongly_is_explained(live_server):
    page = open_cabinet_payment(requests.Session(), live_server, "abc")
    assert "Сумма" in page.text and "Новый платеж" in page.text


@pytest.mark.parametrize("typed, message", [
    ("1000р", "Введите сумму цифрами"), ("5", "Сумма должна быть от 10,00"),
])
def test_cabinet_keeps_a_wrong_amount_with_the_gateways_message(live_server, typed, message):
    page = open_cabinet_payment(requests.Session(), live_server, typed)
    assert page.status_code == 422 and page.url == live_server.url + "/sandbox/cabinet/"
    assert message in page.text and field(page.text, "amount") == typed
    assert 'aria-invalid="true"' in page.text


def test_simulator_pays_an_order_id_once_under_uniqueness_control(live_server):
    session = requests.Session()
    handoff, result = pay(session, live_server, "4111 1111 1111 1111")
    assert "Платеж принят" in result.text
    again = session.get(handoff.url, timeout=10)  # Back to ChronoPay's page of that order
    assert again.status_code == 400 and "уже оплачен" in again.text
    assert "ChronoPay" in again.text and "Тестовый режим" in again.text
    repost = session.post(live_server.url + "/sandbox/chronopay/pay", timeout=10, data={
        "csrf_token": field(handoff.text, "csrf_token"),
        "handoff": field(handoff.text, "handoff"), "email": "dem001@example.ru",
        "country": "RUS", "card": "4111 1111 1111 1111", "expiry": "12/30", "cvc": "123"})
    assert repost.status_code == 409 and "уже оплачен" in repost.text


def test_declining_card_sends_a_signed_decline_before_the_browser_returns(live_server):
    session = requests.Session()
    handoff, result = pay(session, live_server, "4000 0000 0000 0002")
    order_id = parse_qs(urlsplit(handoff.url).query)["order_id"][0]
    with sqlite3.connect(live_server.env["GATEWAY_DATABASE_URL"][len("sqlite:///"):]) as db:
        status = db.execute("SELECT status FROM orders WHERE order_id = ?",
                            (order_id,)).fetchone()[0]
    assert "Платеж не прошел" in result.text and status == "declined"


def test_simulated_chronopay_page_is_chronopays_own(live_server):
    handoff, _ = pay(requests.Session(), live_server, "4000 0000 0000 0002")
    brand = re.search(r'class="brand">([^<]*)<', handoff.text).group(1)
    assert brand == "ChronoPay" and "ДЭМ Интернет" not in handoff.text
    assert "Тестовый режим" in handoff.text
    for name in ("E-mail", "Страна"):
        assert re.search(rf'{name} <span class="required" aria-hidden="true">\*</span>',
                         handoff.text), name


def balance(session, server):
    page = session.get(server.url + "/sandbox/cabinet/", timeout=10).text
    text = re.search(r'id="balance">([^<]*) руб', page).group(1)
    return Decimal(text.replace("\u00a0", "").replace(",", "."))


def eventually(check, timeout=20):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)  # polling the server's state, not timing it


def test_paying_card_raises_the_cabinet_balance_once(live_server):
    session = requests.Session()
    before = balance(session, live_server)
    pay(session, live_server, "4111 1111 1111 1111")
    eventually(lambda: balance(session, live_server) != before)
    assert balance(session, live_server) == before + 1000


def test_sandbox_billing_failing_then_recovering(tmp_path):
    server = LiveServer(tmp_path, env={"GATEWAY_BILLING_RETRY_BASE": "0.2"}).start()
    try:
        session = requests.Session()
        before = balance(session, server)
        switch = session.get(server.url + "/sandbox/billing/", timeout=10).text
        session.post(server.url + "/sandbox/billing/mode", timeout=10, data={
            "csrf_token": field(switch, "csrf_token"), "mode": "fail"})
        pay(session, server, "4111 1111 1111 1111")
        eventually(lambda: "HTTP 500" in session.get(server.url + "/sandbox/billing/",
                                                     timeout=10).text)
        assert balance(session, server) == before
        session.post(server.url + "/sandbox/billing/mode", timeout=10, data={
            "csrf_token": field(switch, "csrf_token"), "mode": "ok"})
        eventually(lambda: balance(session, server) == before + 1000)
    finally:
        server.stop()
