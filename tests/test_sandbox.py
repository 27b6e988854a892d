"""The whole sandbox flow through `python wsgi.py` under waitress, driven by requests."""

import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

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
    handoff = session.post(server.url + "/pay/confirm", timeout=10, data={
        "csrf_token": field(confirm.text, "csrf_token"), "token": field(confirm.text, "token")})
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
