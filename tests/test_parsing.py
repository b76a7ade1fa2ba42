"""Property tests: whatever a token endpoint (or a storage) hands us, only
TokenError subclasses come out of the parsers, and every token that does come
out can be put on a request."""

from __future__ import annotations

import json
from typing import Any

import requests
import requests_mock
from hypothesis import given, settings
from hypothesis import strategies as st

from alf_session import ClientCredentials, Token, TokenError

IDP = "https://idp.example/token"

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**500), max_value=10**500)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
# Objects shaped like token responses, so the interesting branches are reached.
numberish = st.sampled_from(["3600", " 60 ", "1e3", "-1", "nan", "inf", "0x10", "", "1e400"])
token_like = st.fixed_dictionaries(
    {},
    optional={
        "access_token": st.text(max_size=30) | json_values,
        "token_type": st.sampled_from(["Bearer", "bearer", "", "mac", "a b", None]) | json_values,
        "expires_in": st.integers() | numberish | json_values,
        "refresh_token": st.text(max_size=10) | json_values,
        "scope": st.text(max_size=10) | st.lists(st.text(max_size=5)) | json_values,
        "error": st.sampled_from(["invalid_client", "invalid_scope", "weird"]) | json_values,
        "error_description": json_values,
        "error_uri": json_values,
        "expires_at": json_values,
        "issued_at": json_values,
        "extra": json_values,
    },
)
bodies = json_values | token_like

# Per test, not a global profile: other modules' Hypothesis tests keep theirs.
parser_settings = settings(max_examples=120, deadline=None)


def check_usable(token: Token) -> None:
    """A parsed token goes on a request without trouble."""
    prepared = requests.Request(
        "GET", "https://api.example/", headers={"Authorization": token.header_value}
    ).prepare()
    assert prepared.headers["Authorization"] == token.header_value
    token.header_value.encode("latin-1")
    assert Token.from_dict(json.loads(json.dumps(token.to_dict()))) == token


@parser_settings
@given(bodies)
def test_from_response_raises_only_token_errors(body: Any) -> None:
    try:
        token = Token.from_response(body, now=1_700_000_000.0)
    except TokenError:
        return
    check_usable(token)


@parser_settings
@given(bodies)
def test_from_dict_raises_only_token_errors(data: Any) -> None:
    try:
        token = Token.from_dict(data)
    except TokenError:
        return
    check_usable(token)


PROVIDER = ClientCredentials(IDP, "client", "secret-value")
statuses = st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 429, 500, 502, 503])
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/x-www-form-urlencoded",
        "text/plain",
        "text/html",
        "",
    ]
)
raw_bodies = (
    st.binary(max_size=200)
    | bodies.map(lambda v: json.dumps(v).encode())
    | st.text(max_size=100).map(str.encode)
    | st.sampled_from(
        [b"access_token=abc&expires_in=x", b"<html><title>t</title>", b"\xef\xbb\xbf{}"]
    )
)


def real_response(status: int, ctype: str, body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.reason = "Whatever"
    if ctype:
        response.headers["Content-Type"] = ctype
    response._content = body
    response.url = IDP
    return response


@parser_settings
@given(statuses, content_types, raw_bodies)
def test_provider_parse_raises_only_token_errors(status: int, ctype: str, body: bytes) -> None:
    try:
        token = PROVIDER._parse(real_response(status, ctype, body), body, [])
    except TokenError as exc:
        assert "secret-value" not in str(exc)
        return
    assert 200 <= status < 300
    check_usable(token)


@settings(max_examples=60, deadline=None)
@given(statuses, content_types, raw_bodies)
def test_fetch_token_over_the_wire_raises_only_token_errors(
    status: int, ctype: str, body: bytes
) -> None:
    provider = ClientCredentials(IDP, "client", "secret-value", retry=0)
    headers = {"Content-Type": ctype} if ctype else {}
    with requests_mock.Mocker() as mock:
        mock.post(IDP, status_code=status, content=body, headers=headers)
        try:
            token = provider.fetch_token()
        except TokenError:
            return
    check_usable(token)
