"""The gateway's one exception family; handlers in the factory turn them into answers."""


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    status = 400
    title = "Ошибка"
    message = "Запрос не может быть обработан."
    advice = "Вернитесь в личный кабинет и начните платеж заново."


class ConfigError(GatewayError):
    """The configuration is unsafe or incomplete; the service must not start."""


class LinkInvalid(GatewayError):
    """A cabinet link or page token was forged, altered or malformed."""

    status = 403
    title = "Ссылка недействительна"
    message = "Ссылка на оплату повреждена или изменена."


class LinkExpired(GatewayError):
    """A cabinet link or page token is past its lifetime."""

    status = 410
    title = "Ссылка устарела"
    message = "Срок действия ссылки на оплату истек."
    advice = "Вернитесь в личный кабинет и нажмите «Новый платеж» еще раз."


class LinkExhausted(GatewayError):
    """One cabinet link has already created LINK_MAX_ORDERS orders."""

    status = 429
    title = "Слишком много платежей по одной ссылке"
    message = "По этой ссылке уже создано слишком много платежей."
    advice = "Начните платеж заново из личного кабинета."


class OrderRefExpired(GatewayError):
    """A return page's order reference is older than ORDER_REF_MAX_AGE."""

    status = 410
    title = "Ссылка устарела"
    message = "Срок действия этой ссылки на результат платежа истек."
    advice = ("Проверьте баланс в личном кабинете: если платеж был совершен, деньги зачислены "
              "на счет в любом случае.")


class OrderNotFound(GatewayError):
    """No order answers to the reference given."""

    status = 404
    title = "Платеж не найден"
    message = "Мы не нашли такой платеж."
    advice = ("Проверьте, что ссылка открыта полностью. Если вы уже заплатили, деньги поступят "
              "на счет: это видно в личном кабинете.")


class AmountError(GatewayError):
    """An amount is not a valid number of rubles within the limits."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class CallbackRejected(GatewayError):
    """A callback failed verification; `verdict` names why for the journal."""

    status = 403

    def __init__(self, verdict, reason):
        super().__init__(reason)
        self.verdict = verdict
        self.reason = reason


class WebhookInvalid(GatewayError):
    """A received webhook call is unsigned, badly signed or too old."""

    status = 401


class TransportError(GatewayError):
    """An outbound call got no HTTP answer: refused, reset, timed out or malformed."""

    status = 502


class StoreError(GatewayError):
    """The store could not do what was asked; the request is answered 503 (ChronoPay
    re-sends a callback answered so), the delivery worker tries again."""

    status = 503
    title = "Сервис временно недоступен"
    message = "Мы не смогли обработать запрос."
    advice = "Попробуйте еще раз через минуту."


class StoreBusy(StoreError):
    """Other writers held the database for the whole busy budget (DB_BUSY_TIMEOUT)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached, read or written (missing, full disk, I/O error)."""


class StoreConflict(StoreError):
    """A write broke a constraint: a race the schema refused, never applied."""
