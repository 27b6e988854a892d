# The sandbox: simulators of ChronoPay, the cabinet and billing on this gateway itself.
# These secrets are public, so the service refuses them whenever SANDBOX is off.
SANDBOX = True
PUBLIC_URL = "http://127.0.0.1:8080"
CHRONOPAY_URL = "http://127.0.0.1:8080/sandbox/chronopay/"
CABINET_URL = "http://127.0.0.1:8080/sandbox/cabinet/"
BILLING_URL = "http://127.0.0.1:8080/sandbox/billing/"
SECRET_KEY = "sandbox-secret-key-not-for-production-use"
CABINET_SECRET = "sandbox-cabinet-secret-not-for-production"
CHRONOPAY_PRODUCT_ID = "001234-0001-0001"
CHRONOPAY_SHARED_SECRET = "sandbox-chronopay-sharedsec-not-for-production"
CHRONOPAY_CALLBACK_IPS = ["127.0.0.1"]
BILLING_SECRET = "whsec_c2FuZGJveC1iaWxsaW5nLXNlY3JldC1ub3QtcmVhbA=="
