"""Outbound HTTP, through one class: a session per thread, a timeout always, no redirects."""

import threading
from dataclasses import dataclass

import requests

from .errors import TransportError


@dataclass(frozen=True)
class Reply:
    """What a peer answered: status, headers (a case-insensitive mapping) and up to a few KiB
    of body."""

    status: int
    headers: dict
    text: str


class HttpClient:
    """POSTs on behalf of the gateway; every transport failure becomes TransportError."""

    MAX_BODY = 4096

    def __init__(self, timeout):
        self.timeout = timeout
        self._local = threading.local()

    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False  # never route payments through an ambient proxy
        return session

    def post(self, url, *, data=None, headers=None, timeout=None):
        """POST and return the Reply; redirects are answers, not hops."""
        try:
            response = self._session().post(
                url, data=data, headers=headers, timeout=timeout or self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise TransportError(type(exc).__name__) from exc
        # requests' headers stay case-insensitive: "retry-after" is Retry-After.
        return Reply(response.status_code, response.headers.copy(),
                     response.content[: self.MAX_BODY].decode("utf-8", "replace"))
