# Example configuration: copy to instance/config.py (or point GATEWAY_CONFIG at a copy) and
# replace every secret. Any key may also be set as an environment variable GATEWAY_<KEY>.
# The service refuses to start with a secret below left as it is here.

SECRET_KEY = "example-secret-key-replace-with-32-random-characters"  # Flask sessions, page tokens
DATABASE_URL = "sqlite:////var/lib/dem-gateway/gateway.sqlite3"  # default: instance/gateway.sqlite3
PUBLIC_URL = "https://pay.example.ru"  # the gateway's external https base (cb_url, return pages)
CABINET_SECRET = "example-cabinet-secret-replace-with-32-random-chars"  # HMAC key of cabinet links
CABINET_URL = "https://cabinet.example.ru/"  # where «Вернуться в личный кабинет» leads
LINK_MAX_AGE = 1800  # seconds a cabinet link (and the pages it opens) stays valid
LINK_MAX_ORDERS = 5  # orders one cabinet link may create (a double click reuses one)
ORDER_REF_MAX_AGE = 2592000  # seconds a return page's order reference stays valid (30 days)
RECENT_PAYMENT_WARNING = 3600  # seconds after a payment that the confirmation warns (0: off)
CHRONOPAY_URL = "https://payments.chronopay.com/"  # ChronoPay's hosted payment page
CHRONOPAY_PRODUCT_ID = "001234-0001-0001"  # the merchant's RUB product at ChronoPay
CHRONOPAY_SHARED_SECRET = "example-chronopay-sharedsec-replace-with-32-chars"  # ChronoPay sharedsec
CHRONOPAY_SIGN_ORDER_ID = True  # the product uses "payment uniqueness control" (order_id signed)
CHRONOPAY_CALLBACK_IPS = ["93.174.51.230"]  # addresses ChronoPay calls back from
AMOUNT_MIN = "10.00"  # smallest top-up, rubles
AMOUNT_MAX = "15000.00"  # largest top-up, rubles
SANDBOX = False  # True only for the simulators; needs CHRONOPAY_URL = PUBLIC_URL/sandbox/chronopay/
LISTEN = "127.0.0.1:8080"  # address python wsgi.py serves on
THREADS = 8  # waitress worker threads
TRUSTED_PROXY = None  # e.g. "127.0.0.1" with nginx in front: then X-Forwarded-For is believed
UNIX_SOCKET = None  # e.g. "/run/dem-gateway/gateway.sock": serve only there, trust its peer
BILLING_URL = "https://billing.example.ru/hooks/chronopay"  # where payment events are POSTed
BILLING_SECRET = "whsec_ZXhhbXBsZS1iaWxsaW5nLXNlY3JldC1yZXBsYWNlLW1l"  # Standard Webhooks key(s)
BILLING_TIMEOUT = 10  # seconds to wait for billing's answer
BILLING_RETRY_BASE = 10  # seconds before the first retry; doubles each time, capped at 1 hour
BILLING_RETRY_FOR = 259200  # seconds to keep retrying an event before it is dead (3 days)
BILLING_WORKER = True  # run the delivery worker thread inside the service
DB_BUSY_TIMEOUT = 30  # seconds a write waits for the database lock
MAX_CONTENT_LENGTH = 65536  # largest request body accepted, bytes
PERMANENT_SESSION_LIFETIME = 3600  # seconds a signed session cookie (the CSRF token) is accepted
CALLBACK_SAMPLE_CAP = 100  # strangers' callbacks journaled an hour (512 bytes each); rest counted
# INSTANCE_PATH: env only (GATEWAY_INSTANCE_PATH), read before this file: the state directory
# TESTING and DEBUG are refused here and in the environment; GATEWAY_CRASH_AT is a test hook.
