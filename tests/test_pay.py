"""The subscriber's pages through the test client, with CSRF on."""

import pytest
from conftest import callback_fields, confirm_page, hand_off, hidden, link, send_callback

from gateway import chronopay


def test_link_without_amount_asks_for_the_amount(client, app):
    response = client.get(link(app, amount=None))
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Платеж в системе ChronoPay" in page and "Лицевой счет" in page
    assert "Новый платеж" in page and 'inputmode="decimal"' in page
    assert "От 10,00 до 15\u00a0000,00 руб." in page.replace("&nbsp;", "\u00a0")


def test_link_with_amount_shows_the_confirmation(client, app):
    page = client.get(link(app, amount="1000.00")).get_data(as_text=True)
    assert "Параметр" in page and "Значение" in page and "Заплатить" in page
    assert "1\u00a0000,00 руб." in page and "в защищенном режиме (https)" in page


def post_amount(client, app, typed):
    """Open a link without an amount and submit the amount form with what was typed."""
    page = client.get(link(app, amount=None)).get_data(as_text=True)
    return client.post("/pay/amount", data={
        "csrf_token": hidden(page, "csrf_token"), "ticket": hidden(page, "ticket"),
        "amount": typed})


@pytest.mark.parametrize("typed, shown", [("1 000,50", "1\u00a0000,50"), ("250", "250,00")])
def test_typed_amount_leads_to_confirmation(client, app, typed, shown):
    response = post_amount(client, app, typed)
    assert response.status_code == 200
    assert f"{shown} руб." in response.get_data(as_text=True)


@pytest.mark.parametrize("typed, message", [
    ("5", "Сумма должна быть от 10,00"), ("abc", "Введите сумму цифрами"),
    ("", "Введите сумму"), ("100.555", "Введите сумму цифрами"),
])
def test_wrong_amount_shows_the_form_again_with_a_message(client, app, typed, message):
    response = post_amount(client, app, typed)
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert message in body and 'aria-invalid="true"' in body and "Заплатить" not in body


def test_out_of_range_amount_in_a_link_asks_again(client, app):
    page = client.get(link(app, amount="20000.00")).get_data(as_text=True)
    assert "Сумма должна быть от" in page and "Новый платеж" in page


def test_forged_ticket_is_refused(client, app):
    page = client.get(link(app, amount=None)).get_data(as_text=True)
    response = client.post("/pay/amount", data={
        "csrf_token": hidden(page, "csrf_token"), "ticket": "forged.ticket",
        "amount": "100"})
    assert response.status_code == 403


@pytest.mark.parametrize("field, value", [
    ("login", "dem002"), ("account", "7"), ("amount", "1.00"), ("sig", "f" * 64),
    ("sig", ""), ("expires", "abc"),
])
def test_tampered_link_gets_a_russian_403_and_creates_nothing(client, app, store, field,
                                                               value):
    response = client.get(link(app, tamper={field: value}))
    assert response.status_code == 403
    page = response.get_data(as_text=True)
    assert "Ссылка недействительна" in page and "https://cabinet.test/" in page
    assert store.read().count("orders") == 0


@pytest.mark.parametrize("tamper, logged", [
    ({"sig": "f" * 64}, "LinkInvalid: signature mismatch"),
    ({"sig": ""}, "LinkInvalid: malformed sig"),
])
def test_a_refused_link_is_logged_with_its_reason(client, app, caplog, tamper, logged):
    # The page only says "invalid"; ops tell a wrong CABINET_SECRET from a damaged link here.
    with caplog.at_level("INFO", logger=app.logger.name):
        client.get(link(app, tamper=tamper))
    assert f"refused GET pay.start: {logged}" in caplog.messages


def test_expired_link_gets_410(client, app, clock):
    url = link(app)
    clock.advance(601)
    response = client.get(url)
    assert response.status_code == 410 and "Срок действия ссылки" in response.get_data(
        as_text=True)


def test_link_from_the_future_is_refused(client, app, clock):
    response = client.get(link(app, expires=int(clock() + 1801)))
    assert response.status_code == 403


def test_confirm_without_csrf_creates_nothing(client, app, store):
    fields = confirm_page(client, app)
    response = client.post("/pay/confirm", data={"token": fields["token"]})
    assert response.status_code == 400 and "Location" not in response.headers
    assert store.read().count("orders") == 0


def test_confirm_by_get_is_not_allowed(client, app, store):
    fields = confirm_page(client, app)
    response = client.get("/pay/confirm", query_string=fields)
    assert response.status_code == 405 and store.read().count("orders") == 0


def test_confirm_hands_off_to_chronopay_with_a_signed_query(client, app, store):
    query = hand_off(client, app, "1000.00")
    assert query["product_id"] == "001234-0001-0001"
    assert query["product_price"] == "1000.00" and query["product_price_currency"] == "RUB"
    assert query["cb_url"] == "https://pay.test/chronopay/callback" and query["cb_type"] == "P"
    assert query["success_url"].startswith("https://pay.test/pay/success/")
    assert query["decline_url"].startswith("https://pay.test/pay/decline/")
    assert query["language"] == "ru" and "лицевого счета 6" in query["product_name"]
    assert query["sign"] == chronopay.request_sign(
        "001234-0001-0001", "1000.00", query["order_id"], app.config["CHRONOPAY_SHARED_SECRET"])
    order = store.read().order(query["order_id"])
    assert (order["status"], order["login"], order["account"], order["amount"]) == (
        "pending", "dem001", "6", "1000.00")


def test_sign_without_order_id_when_configured(config, tmp_path):
    from gateway import create_app

    app = create_app(dict(config, CHRONOPAY_SIGN_ORDER_ID=False))
    query = hand_off(app.test_client(), app)
    assert query["sign"] == chronopay.request_sign(
        "001234-0001-0001", "1000.00", query["order_id"], app.config["CHRONOPAY_SHARED_SECRET"],
        sign_order_id=False)


def test_double_click_creates_one_order(client, app, store):
    fields = confirm_page(client, app)
    first = client.post("/pay/confirm", data=fields)
    second = client.post("/pay/confirm", data=fields)
    assert first.headers["Location"] == second.headers["Location"]
    assert store.read().count("orders") == 1


def test_resubmitting_a_paid_confirmation_shows_the_result(client, app, store):
    fields = confirm_page(client, app)
    query = hand_off_with(client, fields)
    send_callback(client, callback_fields(app, query))
    again = client.post("/pay/confirm", data=fields)
    assert again.headers["Location"].startswith("https://pay.test/pay/success/")
    assert store.read().count("orders") == 1


def hand_off_with(client, fields):
    from urllib.parse import parse_qs, urlsplit

    location = client.post("/pay/confirm", data=fields).headers["Location"]
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def result_path(url):
    return url.replace("https://pay.test", "")


def test_return_page_waits_then_shows_paid(client, app):
    query = hand_off(client, app)
    waiting = client.get(result_path(query["success_url"]))
    page = waiting.get_data(as_text=True)
    assert "Ожидаем подтверждение от ChronoPay" in page
    assert '<meta http-equiv="refresh"' in page
    send_callback(client, callback_fields(app, query))
    page = client.get(result_path(query["success_url"])).get_data(as_text=True)
    assert "Платеж принят" in page and "refresh" not in page


def test_decline_page_says_it_failed_and_changes_nothing(client, app, store):
    query = hand_off(client, app)
    page = client.get(result_path(query["decline_url"])).get_data(as_text=True)
    assert "Платеж не прошел" in page
    assert store.read().order(query["order_id"])["status"] == "pending"


def test_return_page_by_post_is_read_only(client, app, store):
    query = hand_off(client, app)
    response = client.post(result_path(query["success_url"]), data={"status": "paid"})
    assert response.status_code == 303
    assert store.read().order(query["order_id"])["status"] == "pending"


def test_nobody_reads_an_order_by_its_bare_id(client, app):
    query = hand_off(client, app)
    for path in (f"/pay/success/{query['order_id']}", "/pay/success/x.y",
                 "/pay/success/" + result_path(query["success_url"]).split("/")[-1][:-2]):
        response = client.get(path)
        assert response.status_code == 403
        assert query["order_id"] not in response.get_data(as_text=True)


def test_unknown_page_is_a_russian_404(client):
    response = client.get("/nowhere")
    assert response.status_code == 404 and "Страница не найдена" in response.get_data(
        as_text=True)


def test_unexpected_failure_is_a_russian_500_without_a_traceback(config):
    from gateway import create_app

    app = create_app(dict(config, PROPAGATE_EXCEPTIONS=False))

    @app.get("/pay/broken")
    def broken():
        raise ZeroDivisionError("an unexpected bug")

    response = app.test_client().get("/pay/broken")
    page = response.get_data(as_text=True)
    assert response.status_code == 500 and "Ошибка на нашей стороне" in page
    assert "Не платите повторно" in page and "https://cabinet.test/" in page
    assert "Traceback" not in page and "ZeroDivisionError" not in page
    app.extensions["store"].close()


def test_every_answer_carries_the_security_headers(client, app):
    for response in (client.get(link(app)), client.get("/nowhere"),
                     client.post("/chronopay/callback")):
        headers = response.headers
        assert "form-action 'self' https://payments.chronopay.com" in headers[
            "Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-store"
        assert headers["Referrer-Policy"] == "same-origin"
        assert "max-age" in headers["Strict-Transport-Security"]


def test_session_cookie_is_secure_httponly_lax(client, app):
    response = client.get(link(app, amount=None))
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


@pytest.mark.parametrize("path, target", [("/static//style.css", "/static/style.css"),
                                          ("/pay//success/x", "/pay/success/x")])
def test_canonical_redirects_stay_on_our_host_whatever_host_is_sent(client, path, target):
    response = client.get(path, headers={"Host": "evil.example"})
    # Werkzeug's own redirect, built from SERVER_NAME (PUBLIC_URL's host), never from Host.
    assert response.status_code == 308
    assert response.headers["Location"] in ("http://pay.test" + target,
                                            "https://pay.test" + target)


def amount_page(client, app, **kwargs):
    page = client.get(link(app, amount=None, **kwargs)).get_data(as_text=True)
    return {"csrf_token": hidden(page, "csrf_token"), "ticket": hidden(page, "ticket")}


def test_a_bad_amount_every_few_seconds_does_not_outlive_the_link(client, app, clock):
    # Each wrong amount re-renders the form with a fresh ticket; the link's expiry travels in
    # it, so the form dies with the link instead of being renewed for ever.
    fields = amount_page(client, app, expires=int(clock() + 60))
    for _ in range(5):
        clock.advance(10)
        page = client.post("/pay/amount", data=dict(fields, amount="abc"))
        assert page.status_code == 422
        fields["ticket"] = hidden(page.get_data(as_text=True), "ticket")
    clock.advance(11)
    response = client.post("/pay/amount", data=dict(fields, amount="1000"))
    assert response.status_code == 410 and "Срок действия ссылки" in response.get_data(
        as_text=True)


def test_a_confirmation_does_not_outlive_the_link(client, app, clock, store):
    url = link(app, expires=int(clock() + 60))
    page = client.get(url).get_data(as_text=True)
    fields = {"csrf_token": hidden(page, "csrf_token"), "token": hidden(page, "token")}
    clock.advance(61)  # the page token alone (LINK_MAX_AGE) would live 30 minutes
    response = client.post("/pay/confirm", data=fields)
    assert response.status_code == 410 and store.read().count("orders") == 0


def test_a_link_expires_exactly_at_its_second(client, app, clock):
    expires = int(clock()) + 60
    url = link(app, expires=expires)
    clock.now = expires
    assert client.get(url).status_code == 200
    clock.now = expires + 0.5
    assert client.get(url).status_code == 410


def test_one_link_makes_at_most_link_max_orders_orders(client, app, store):
    url = link(app)
    assert app.config["LINK_MAX_ORDERS"] == 5
    for n in range(6):
        page = client.get(url).get_data(as_text=True)
        fields = {"csrf_token": hidden(page, "csrf_token"), "token": hidden(page, "token")}
        first = client.post("/pay/confirm", data=fields)
        again = client.post("/pay/confirm", data=fields)  # a double click makes no new order
        if n < 5:
            assert first.status_code == again.status_code == 303
    assert first.status_code == 429 and store.read().count("orders") == 5
    text = first.get_data(as_text=True)
    assert "Начните платеж заново из личного кабинета" in text
    # Another link (another «Новый платеж» in the cabinet) works.
    assert client.post("/pay/confirm", data=confirm_page(client, app)).status_code == 303


# The cabinet link's lifetime (issue 10) and the return pages' (issue 11).

def test_retyping_a_bad_amount_does_not_outlive_the_link(client, app, clock):
    page = client.get(link(app, amount=None)).get_data(as_text=True)  # link expires in 600 s
    for _ in range(3):  # each re-render used to sign a fresh ticket, renewing it for ever
        clock.advance(250)
        response = client.post("/pay/amount", data={
            "csrf_token": hidden(page, "csrf_token"), "ticket": hidden(page, "ticket"),
            "amount": "abc"})
        if response.status_code != 422:
            break
        page = response.get_data(as_text=True)
    assert response.status_code == 410
    assert "Срок действия ссылки" in response.get_data(as_text=True)


def test_confirmation_token_does_not_outlive_the_link(client, app, store, clock):
    page = client.get(link(app, amount="1000.00", expires=int(clock() + 60))).get_data(
        as_text=True)
    clock.advance(61)  # within LINK_MAX_AGE of the token, past the link's own expiry
    response = client.post("/pay/confirm", data={
        "csrf_token": hidden(page, "csrf_token"), "token": hidden(page, "token")})
    assert response.status_code == 410 and store.read().count("orders") == 0


def test_link_is_expired_the_moment_after_expires(client, app, clock):
    url = link(app, expires=int(clock() + 10))
    clock.advance(10)
    assert client.get(url).status_code == 200
    clock.advance(0.5)  # int(now) still equals expires: it used to be accepted
    assert client.get(url).status_code == 410


def test_one_link_creates_at_most_link_max_orders(config):
    from gateway import create_app
    from gateway.config import DEFAULTS

    assert DEFAULTS["LINK_MAX_ORDERS"] == 5
    app = create_app(dict(config, LINK_MAX_ORDERS=DEFAULTS["LINK_MAX_ORDERS"]))
    client, store = app.test_client(), app.extensions["store"]
    url = link(app, amount="1000.00")

    def confirm():
        page = client.get(url).get_data(as_text=True)
        return client.post("/pay/confirm", data={
            "csrf_token": hidden(page, "csrf_token"), "token": hidden(page, "token")})

    for _ in range(5):
        assert confirm().status_code == 303
    refused = confirm()
    assert refused.status_code == 429
    assert "Начните платеж заново из личного кабинета" in refused.get_data(as_text=True)
    assert store.read().count("orders") == 5
    another_link = confirm_page(client, app, "999.00")
    assert client.post("/pay/confirm", data=another_link).status_code == 303
    store.close()


def test_return_page_reference_expires_with_advice(client, app, clock):
    query = hand_off(client, app)
    path = result_path(query["success_url"])
    clock.advance(app.config["ORDER_REF_MAX_AGE"])
    assert client.get(path).status_code == 200
    clock.advance(1)
    response = client.get(path)
    page = response.get_data(as_text=True)
    assert response.status_code == 410
    assert "Проверьте баланс в личном кабинете" in page and "зачислены" in page


# Paying twice by accident (issue 12).

def paid_order(client, app, clock):
    query = hand_off(client, app, "1000.00")
    send_callback(client, callback_fields(app, query))
    return query


def test_confirmation_warns_of_a_recent_payment_and_needs_a_tick(client, app, store, clock):
    paid_order(client, app, clock)  # paid at NOW = 03:20 UTC, 06:20 in Moscow
    clock.advance(600)
    page = client.get(link(app, amount="500.00")).get_data(as_text=True).replace(
        "&nbsp;", "\u00a0")
    assert "Платеж на 1\u00a0000,00 руб. уже принят в 06:20" in page
    assert page.index("уже принят") < page.index("Заплатить</button>")
    assert 'name="again"' in page and "required" in page
    fields = {"csrf_token": hidden(page, "csrf_token"), "token": hidden(page, "token")}
    careless = client.post("/pay/confirm", data=fields)
    assert careless.status_code == 422 and store.read().count("orders") == 1
    assert "Да, я хочу заплатить еще раз" in careless.get_data(as_text=True)
    meant = client.post("/pay/confirm", data=dict(fields, again="y"))
    assert meant.status_code == 303 and store.read().count("orders") == 2


def test_no_warning_after_recent_payment_warning_seconds(client, app, clock):
    paid_order(client, app, clock)
    clock.advance(app.config["RECENT_PAYMENT_WARNING"] + 1)
    page = client.get(link(app, amount="500.00")).get_data(as_text=True)
    assert "уже принят" not in page and 'name="again"' not in page


def test_upgrade_adds_link_id_to_an_earlier_database(tmp_path):
    import sqlite3

    from gateway.store import Store

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:  # the orders table as the previous version made it
        conn.execute(
            "CREATE TABLE orders (order_id TEXT PRIMARY KEY, nonce TEXT NOT NULL UNIQUE,"
            " login TEXT NOT NULL, account TEXT NOT NULL, amount TEXT NOT NULL,"
            " status TEXT NOT NULL, review TEXT, created_at REAL NOT NULL,"
            " updated_at REAL NOT NULL, paid_at REAL, transaction_id TEXT)")
    conn.close()
    store = Store(f"sqlite:///{path}")
    store.init_schema()
    with store.write() as tx:
        assert tx.orders_of_link("k") == 0
        columns = {row[1] for row in tx.conn.execute("PRAGMA table_info(orders)")}
    store.close()
    assert "link_id" in columns


def test_recent_payment_warning_zero_turns_it_off(config):
    from gateway import create_app

    app = create_app(dict(config, RECENT_PAYMENT_WARNING=0))
    client = app.test_client()
    paid_order(client, app, None)
    page = client.get(link(app, amount="500.00")).get_data(as_text=True)
    assert "уже принят" not in page
    app.extensions["store"].close()
