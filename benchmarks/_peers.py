"""The libraries measured, each set up the way its documentation shows for the
client-credentials grant, with the glue (if any) its user would write."""

from __future__ import annotations

import importlib
import os
from typing import Any

import requests
from _harness import AUDIENCE, CLIENT_ID, CLIENT_SECRET, Env

import alf_session

# requests-oauthlib and authlib refuse plain http unless told; everything here
# runs on loopback, which is what these switches are for.
os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")
os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")


class Contender:
    """One library, set up the way its documentation shows for client credentials."""

    name = ""
    dist = ""  # distribution name, for its version
    module = ""  # what to import to know it is installed
    stores: tuple[str, ...] = ()  # shared stores it can use across processes
    needs_redis = False  # it cannot work without Redis
    glue = ""  # user code this benchmark writes because the library has no such feature

    def missing(self, env: Env | None = None) -> str | None:
        try:
            importlib.import_module(self.module)
        except ImportError as exc:
            return f"not installed ({exc.name}); pip install -e '.[bench]'"
        if self.needs_redis and env is not None and env.redis.missing:
            return f"needs Redis ({env.redis.missing})"
        return None

    def build(
        self, token_url: str, *, redis_port: int | None = None, store: str | None = None,
        tmpdir: str = "", short: bool = False,
    ) -> requests.Session:  # fmt: skip
        """A session with no token yet. ``short``: configured for 2 s tokens."""
        raise NotImplementedError

    def call(self, session: requests.Session, url: str, **kwargs: Any) -> requests.Response:
        """One API call as a user of this library writes it."""
        return session.get(url, **kwargs)


def _redis(port: int | None, **kwargs: Any) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port, **kwargs)


class AlfSession(Contender):
    name = "alf-session TokenSession"
    dist = "alf-session"
    module = "alf_session"
    stores = ("redis",)

    def build(self, token_url, *, redis_port=None, store=None, tmpdir="", short=False):  # type: ignore[no-untyped-def]
        storage = _redis(redis_port) if store == "redis" else None
        return alf_session.TokenSession(token_url, CLIENT_ID, CLIENT_SECRET, token_storage=storage)


class Alf(Contender):
    name = "alf Client"
    dist = "alf"
    module = "alf.client"
    stores = ("redis",)

    def build(self, token_url, *, redis_port=None, store=None, tmpdir="", short=False):  # type: ignore[no-untyped-def]
        from alf.client import Client

        # alf's storage parses what get() returns as str: decode_responses=True.
        storage = _redis(redis_port, decode_responses=True) if store == "redis" else None
        return Client(  # type: ignore[no-any-return]
            token_endpoint=token_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            token_storage=storage,
        )


class _CacheAuth(requests.auth.AuthBase):
    """The glue oauth-token-cache leaves to its user: put its token on a request."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.cache.token(AUDIENCE)
        request.headers["Authorization"] = f"{token.token_type} {token.access_token}"
        return request


class OAuthTokenCache(Contender):
    name = "oauth-token-cache"
    dist = "oauth-token-cache"
    module = "oauth_token_cache"
    stores = ("redis",)
    needs_redis = True
    glue = "an AuthBase calling cache.token(audience) (it is a token cache, not a session)"

    def build(self, token_url, *, redis_port=None, store=None, tmpdir="", short=False):  # type: ignore[no-untyped-def]
        from oauth_token_cache import OAuthTokenCache as Cache

        cache = Cache(
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            token_url=token_url,
            redis_client=_redis(redis_port, decode_responses=True),
        )
        session = requests.Session()
        session.auth = _CacheAuth(cache)
        return session


class RequestsOAuthlib(Contender):
    name = "requests-oauthlib"
    dist = "requests-oauthlib"
    module = "requests_oauthlib"
    glue = "fetch_token() first and on TokenExpiredError (no renewal for this grant)"

    def build(self, token_url, *, redis_port=None, store=None, tmpdir="", short=False):  # type: ignore[no-untyped-def]
        from oauthlib.oauth2 import BackendApplicationClient
        from requests_oauthlib import OAuth2Session

        session = OAuth2Session(client=BackendApplicationClient(client_id=CLIENT_ID))
        session.bench_token_url = token_url  # type: ignore[attr-defined]
        return session  # type: ignore[no-any-return]

    def _fetch(self, session: Any) -> None:
        session.fetch_token(
            token_url=session.bench_token_url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
        )

    def call(self, session, url, **kwargs):  # type: ignore[no-untyped-def]
        from oauthlib.oauth2 import TokenExpiredError

        if not session.token:
            self._fetch(session)
        try:
            return session.get(url, **kwargs)
        except TokenExpiredError:
            self._fetch(session)
            return session.get(url, **kwargs)


class Authlib(Contender):
    name = "authlib OAuth2Session"
    dist = "authlib"
    module = "authlib.integrations.requests_client"
    glue = "fetch_token() before the first call"

    def build(self, token_url, *, redis_port=None, store=None, tmpdir="", short=False):  # type: ignore[no-untyped-def]
        from authlib.integrations.requests_client import OAuth2Session

        # Its default leeway (60 s) is longer than a 2 s token: it would fetch
        # on every request. 1 s is what a user with short tokens would set.
        return OAuth2Session(  # type: ignore[no-any-return]
            CLIENT_ID,
            CLIENT_SECRET,
            token_endpoint=token_url,
            grant_type="client_credentials",
            leeway=1 if short else 60,
        )

    def call(self, session, url, **kwargs):  # type: ignore[no-untyped-def]
        if not session.token:
            session.fetch_token()
        return session.get(url, **kwargs)


class RequestsOAuth2Client(Contender):
    name = "requests-oauth2client"
    dist = "requests-oauth2client"
    module = "requests_oauth2client"

    def build(self, token_url, *, redis_port=None, store=None, tmpdir="", short=False):  # type: ignore[no-untyped-def]
        from requests_oauth2client import OAuth2Client, OAuth2ClientCredentialsAuth

        # testing=True: it refuses a plain-http token endpoint, even on loopback.
        client = OAuth2Client(
            token_endpoint=token_url, auth=(CLIENT_ID, CLIENT_SECRET), testing=True
        )
        session = requests.Session()
        session.auth = OAuth2ClientCredentialsAuth(client, leeway=1 if short else 20)
        return session


class RequestsAuth(Contender):
    name = "requests-auth"
    dist = "requests-auth"
    module = "requests_auth"
    stores = ("file",)

    def build(self, token_url, *, redis_port=None, store=None, tmpdir="", short=False):  # type: ignore[no-untyped-def]
        from requests_auth import (
            JsonTokenFileCache,
            OAuth2,
            OAuth2ClientCredentials,
            TokenMemoryCache,
        )

        # Its cache is global to the process: start each run cold.
        if store == "file":
            OAuth2.token_cache = JsonTokenFileCache(os.path.join(tmpdir, "requests-auth.json"))
        else:
            OAuth2.token_cache = TokenMemoryCache()
        session = requests.Session()
        session.auth = OAuth2ClientCredentials(
            token_url, CLIENT_ID, CLIENT_SECRET, early_expiry=0.5 if short else None
        )
        return session


CONTENDERS: list[Contender] = [
    AlfSession(),
    Alf(),
    OAuthTokenCache(),
    RequestsOAuthlib(),
    Authlib(),
    RequestsOAuth2Client(),
    RequestsAuth(),
]


BY_NAME = {c.name: c for c in CONTENDERS}
