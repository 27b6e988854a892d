"""The ChronoPay payment gateway of DEM Internet: one factory builds the whole service."""

import logging
import os
import time

import click
from flask import Flask, current_app, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from . import billing
from . import config as config_layers
from .delivery import Deliverer
from .errors import ConfigError, GatewayError, StoreError
from .http import HttpClient
from .signing import PageTokens
from .store import open_store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
csrf = CSRFProtect()
# Paths answered with a plain status for machines rather than a page for people.
MACHINE_PATHS = ("/chronopay/callback", "/sandbox/billing/")


def create_app(test_config=None):
    """Build the app: config, instance folder, store, clients, blueprints, handlers."""
    # The state directory: a setting (GATEWAY_INSTANCE_PATH, e.g. systemd's StateDirectory),
    # read before any config file, so a read-only checkout is never written to.
    instance_path = (test_config or {}).get("INSTANCE_PATH") or os.environ.get(
        "GATEWAY_INSTANCE_PATH") or None
    app = Flask(
        __name__, instance_relative_config=True, template_folder=os.path.join(ROOT, "templates"),
        static_folder=os.path.join(ROOT, "static"),
        instance_path=os.path.abspath(instance_path) if instance_path else None,
    )
    os.makedirs(app.instance_path, exist_ok=True)
    config_layers.load(app.config, ROOT, app.instance_path, test_config)
    app.config["INSTANCE_PATH"] = app.instance_path
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    clock = app.config.get("CLOCK") or time.time
    app.extensions["clock"] = clock
    app.extensions["store"] = store = open_store(app.config["DATABASE_URL"],
                                                 app.config["DB_BUSY_TIMEOUT"])
    store.init_schema()
    serving = click.get_current_context(silent=True) is None
    if serving and store.unsigned_transactions():
        raise ConfigError(
            f"{store.unsigned_transactions()} transactions recorded by an earlier version have"
            " no signed text the journal can restore; review them (`flask --app gateway"
            " payments list`) and run `flask --app gateway transactions accept-unsigned`.")
    app.extensions["tokens"] = PageTokens(app.config["SECRET_KEY"], app.config["LINK_MAX_AGE"],
                                          clock)
    csrf.init_app(app)
    app.extensions["http"] = http = HttpClient(timeout=app.config["BILLING_TIMEOUT"])
    if app.config.get("BILLING_SECRET") and app.config.get("BILLING_URL"):
        app.extensions["deliverer"] = deliverer = Deliverer(
            store, http, url=app.config["BILLING_URL"],
            keys=billing.parse_secrets(app.config["BILLING_SECRET"]), clock=clock,
            retry_base=app.config["BILLING_RETRY_BASE"], timeout=app.config["BILLING_TIMEOUT"],
            monotonic=app.config.get("MONOTONIC"),  # like CLOCK, for tests only
        )
        # The flask CLI builds the app too; only a serving process runs the worker thread
        # (ops run `flask --app gateway deliver` for a separate one).
        if app.config["BILLING_WORKER"] and serving:
            deliverer.start()

    from . import callback, cli, pay

    app.register_blueprint(pay.bp)
    app.register_blueprint(callback.bp)
    if app.config["SANDBOX"]:
        from . import sandbox  # only here: without SANDBOX the simulators are not even loaded

        sandbox.register(app)
    cli.register(app)
    register_handlers(app)
    app.after_request(secure_headers)
    return app


def register_handlers(app):
    """Our errors, HTTP errors and database failures become a Russian page or a plain status."""

    @app.errorhandler(GatewayError)
    def gateway_error(exc):
        # The page says only "invalid" or "expired"; the log says why (a "signature
        # mismatch" on every link usually means the cabinet's CABINET_SECRET differs from ours).
        app.logger.info("refused %s %s: %s: %s", request.method, request.endpoint,
                        type(exc).__name__, exc)
        return answer(exc.status, exc.title, exc.message, exc.advice)

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        return answer(400, "Страница устарела",
                      "Форма была открыта слишком давно или в другом окне.",
                      "Вернитесь в личный кабинет и начните платеж заново.")

    @app.errorhandler(HTTPException)
    def http_error(exc):
        titles = {404: "Страница не найдена", 405: "Недопустимый запрос",
                  413: "Слишком большой запрос"}
        return answer(exc.code, titles.get(exc.code, "Ошибка"),
                      "Такой страницы у нас нет." if exc.code == 404 else
                      "Запрос не может быть обработан.",
                      "Вернитесь в личный кабинет и попробуйте еще раз.")

    @app.errorhandler(StoreError)
    def database_error(exc):
        if request.path.startswith("/chronopay/callback"):
            # ChronoPay re-sends a callback that got no 200; say which one waits for that.
            app.logger.error(
                "database unavailable, callback answered 503 (order %r, transaction %r %r): %s",
                request.values.get("order_id", "")[:64],
                request.values.get("transaction_id", "")[:64],
                request.values.get("transaction_type", "")[:64], exc)
        else:
            app.logger.error("database unavailable: %s", exc)
        return answer(exc.status, exc.title, exc.message, exc.advice)

    @app.errorhandler(500)
    def internal_error(exc):
        return answer(500, "Ошибка на нашей стороне",
                      "Что-то пошло не так, и мы уже об этом знаем. Если вы оплатили, деньги "
                      "не пропадут: они поступят на лицевой счет, как только ChronoPay "
                      "подтвердит платеж.",
                      "Не платите повторно. Проверьте баланс в личном кабинете через "
                      "несколько минут.")


def answer(status, title, message, advice):
    """A Russian error page for people, a plain status line for machines."""
    if request.path.startswith(MACHINE_PATHS):
        return f"{status} {title}\n", status, {"Content-Type": "text/plain; charset=utf-8"}
    page = render_template("error.html", status=status, title=title, message=message,
                           advice=advice)
    return page, status


def secure_headers(response):
    """Headers every response carries: a strict CSP that still lets the hand-off leave."""
    chronopay = current_app.config["CHRONOPAY_URL"]
    origin = "/".join(chronopay.split("/")[:3])
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self'; "
        f"form-action 'self' {origin}; frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    # same-origin keeps Flask-WTF's https referrer check working and sends nothing to others.
    response.headers["Referrer-Policy"] = "same-origin"
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response
