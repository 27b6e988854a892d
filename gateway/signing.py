"""Every signature the gateway checks or makes towards the cabinet and its own pages."""

import hashlib
import hmac
import re
from dataclasses import dataclass, field

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from .errors import LinkExpired, LinkInvalid

LOGIN = re.compile(r"[A-Za-z0-9._@-]{1,64}", re.ASCII)
ACCOUNT = re.compile(r"[0-9]{1,20}", re.ASCII)
EXPIRES = re.compile(r"[0-9]{1,12}", re.ASCII)
HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)
LINK_FIELDS = ("login", "account", "amount", "expires", "sig")


@dataclass(frozen=True)
class Link:
    """What a verified cabinet link says; amount is the raw string, or None."""

    login: str
    account: str
    amount: str | None
    # Not compared: two Links are the same request whatever their lifetime or id.
    expires: int = field(default=0, compare=False)
    link_id: str = field(default="", compare=False)


def link_id(sig):
    """A short id of one link, from its signature: its orders are counted by it."""
    return hashlib.sha256(sig.encode()).hexdigest()[:32]


def link_sig(secret, login, account, amount, expires):
    """HMAC-SHA256 hex of the link fields, exactly as the cabinet computes it."""
    message = "\n".join((login, account, amount or "", str(expires)))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def make_link(secret, login, account, amount, expires):
    """The query of a signed cabinet link, in the contract's field order."""
    query = {"login": login, "account": account}
    if amount:
        query["amount"] = amount
    query["expires"] = str(expires)
    query["sig"] = link_sig(secret, login, account, amount, expires)
    return query


def verify_link(args, secret, now, max_age):
    """Check a cabinet link's query (a key -> list of values mapping); return the Link.

    `now` is the float clock: a link is valid while now <= expires, to the fraction of a second.
    """
    fields = {}
    for name in LINK_FIELDS:
        values = args.get(name, [])
        if len(values) > 1:
            raise LinkInvalid(f"repeated {name}")
        fields[name] = values[0] if values else None
    login, account, amount = fields["login"], fields["account"], fields["amount"]
    expires, sig = fields["expires"], fields["sig"]
    for name, value, pattern in (
        ("login", login, LOGIN),
        ("account", account, ACCOUNT),
        ("expires", expires, EXPIRES),
        ("sig", sig, HEX64),
    ):
        if value is None or not pattern.fullmatch(value):
            raise LinkInvalid(f"malformed {name}")
    if amount is not None and (not amount or len(amount) > 32):
        raise LinkInvalid("malformed amount")
    expected = link_sig(secret, login, account, amount, expires)
    if not hmac.compare_digest(expected, sig):
        raise LinkInvalid("signature mismatch")
    if int(expires) < now:
        raise LinkExpired("link expired")
    if int(expires) > now + max_age:
        raise LinkInvalid("link expires too far in the future")
    return Link(login, account, amount, int(expires), link_id(sig))


class PageTokens:
    """Signed tokens that carry state between our own pages; one salt per purpose."""

    SALTS = {"ticket": "pay.ticket", "confirm": "pay.confirm", "order": "pay.order-ref"}

    def __init__(self, secret_key, max_age, clock):
        self.max_age = max_age
        self._serializers = {
            purpose: _ClockedSerializer(secret_key, salt=salt, clock=clock)
            for purpose, salt in self.SALTS.items()
        }

    def dumps(self, purpose, data):
        """Sign data for one purpose."""
        return self._serializers[purpose].dumps(data)

    def loads(self, purpose, token, max_age=True):
        """Verify a token of one purpose; its lifetime is the link's unless max_age=None."""
        age = self.max_age if max_age is True else max_age
        try:
            return self._serializers[purpose].loads(token or "", max_age=age)
        except SignatureExpired as exc:
            raise LinkExpired("token expired") from exc
        except BadSignature as exc:
            raise LinkInvalid("token invalid") from exc


class _ClockedSerializer(URLSafeTimedSerializer):
    """A timed serializer whose notion of now is the app's clock, so tests can move time."""

    def __init__(self, *args, clock, **kwargs):
        super().__init__(*args, **kwargs)
        self._clock = clock

    def make_signer(self, salt=None):
        signer = super().make_signer(salt)
        signer.get_timestamp = lambda: int(self._clock())
        return signer
