"""Token: parsing what servers send, the JSON round trip, and a repr without secrets."""

from __future__ import annotations

import base64
import json
import pickle
import time
from typing import Any

import pytest

from alf_session import InvalidTokenResponse, Token, TokenError

NOW = 1_700_000_000.0


def jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.signature"


class TestFromResponse:
    def test_minimal_rfc6749_response(self) -> None:
        token = Token.from_response(
            {"access_token": "abc", "token_type": "Bearer", "expires_in": 3600}, now=NOW
        )
        assert token.access_token == "abc"
        assert token.token_type == "Bearer"
        assert token.expires_at == NOW + 3600
        assert token.issued_at == NOW
        assert token.lifetime == 3600
        assert token.refresh_token is None
        assert token.scope is None
        assert token.extra == {}
        assert token.header_value == "Bearer abc"

    @pytest.mark.parametrize("expires_in", ["3600", " 3600 ", "3600.0", 3600.0])
    def test_expires_in_as_numeric_string_or_float(self, expires_in: object) -> None:
        token = Token.from_response({"access_token": "abc", "expires_in": expires_in}, now=NOW)
        assert token.expires_at == NOW + 3600

    @pytest.mark.parametrize("token_type", ["bearer", "BEARER", None])
    def test_bearer_is_normalised(self, token_type: object) -> None:
        token = Token.from_response({"access_token": "abc", "token_type": token_type}, now=NOW)
        assert token.token_type == "Bearer"
        assert token.header_value == "Bearer abc"

    def test_missing_token_type_means_bearer(self) -> None:
        assert Token.from_response({"access_token": "abc"}, now=NOW).token_type == "Bearer"

    def test_other_token_type_kept(self) -> None:
        token = Token.from_response({"access_token": "abc", "token_type": "DPoP"}, now=NOW)
        assert token.header_value == "DPoP abc"

    def test_fields_kept(self) -> None:
        token = Token.from_response(
            {
                "access_token": "abc",
                "expires_in": 60,
                "refresh_token": "rt",
                "scope": "read write",
                "id_token": "x.y.z",
                "vendor": {"a": 1},
            },
            now=NOW,
        )
        assert token.refresh_token == "rt"
        assert token.scope == "read write"
        assert token.extra == {"id_token": "x.y.z", "vendor": {"a": 1}}

    def test_scope_list_joined(self) -> None:
        token = Token.from_response({"access_token": "abc", "scope": ["a", "b"]}, now=NOW)
        assert token.scope == "a b"

    def test_jwt_exp_used_without_expires_in(self) -> None:
        token = Token.from_response({"access_token": jwt({"exp": NOW + 120})}, now=NOW)
        assert token.expires_at == NOW + 120

    def test_expires_in_wins_over_jwt_exp(self) -> None:
        token = Token.from_response(
            {"access_token": jwt({"exp": NOW + 120}), "expires_in": 60}, now=NOW
        )
        assert token.expires_at == NOW + 60

    def test_default_lifetime_when_nothing_says(self) -> None:
        token = Token.from_response({"access_token": "opaque"}, now=NOW, default_lifetime=900)
        assert token.expires_at == NOW + 900
        assert Token.from_response({"access_token": "x"}, now=NOW).expires_at == NOW + 3600

    def test_unknown_expiry_with_no_default(self) -> None:
        token = Token.from_response({"access_token": "opaque"}, now=NOW, default_lifetime=None)
        assert token.expires_at is None
        assert token.expires_in is None
        assert token.expired is False
        assert token.lifetime is None

    def test_expires_in_zero_means_unknown(self) -> None:
        # golang/oauth2 reads 0 as "not given"; so do we (then the default applies).
        token = Token.from_response({"access_token": "abc", "expires_in": 0}, now=NOW)
        assert token.expires_at == NOW + 3600

    def test_jwt_without_exp_or_garbage_payload_falls_back(self) -> None:
        assert Token.from_response({"access_token": jwt({"sub": "x"})}, now=NOW).expires_at == (
            NOW + 3600
        )
        assert Token.from_response({"access_token": "a.!!!.c"}, now=NOW).expires_at == NOW + 3600
        assert Token.from_response({"access_token": jwt({"exp": 10**400})}, now=NOW).expires_at == (
            NOW + 3600
        )

    @pytest.mark.parametrize(
        ("body", "words"),
        [
            ({}, "'access_token' (it is missing)"),
            ({"access_token": ""}, "'access_token'"),
            ({"access_token": 42}, "'access_token'"),
            ({"access_token": "abc", "expires_in": "soon"}, "non-numeric 'expires_in'"),
            ({"access_token": "abc", "expires_in": True}, "boolean 'expires_in'"),
            ({"access_token": "abc", "expires_in": [1]}, "'expires_in' that is a array"),
            ({"access_token": "abc", "expires_in": -5}, "out-of-range 'expires_in'"),
            ({"access_token": "abc", "expires_in": "nan"}, "out-of-range 'expires_in'"),
            ({"access_token": "abc", "expires_in": 10**400}, "'expires_in'"),
            ({"access_token": "abc", "token_type": "Bear er"}, "'token_type'"),
            ({"access_token": "abc", "token_type": 5}, "'token_type'"),
            ({"access_token": "abc", "refresh_token": 5}, "'refresh_token'"),
            ({"access_token": "abc", "scope": {"a": 1}}, "'scope'"),
            ({"access_token": "abc\r\nX-Injected: 1"}, "'access_token'"),
            ([], "JSON array, not an object"),
            ("abc", "JSON string, not an object"),
            (None, "JSON null, not an object"),
        ],
    )
    def test_unusable_responses_say_what_is_wrong(self, body: object, words: str) -> None:
        with pytest.raises(InvalidTokenResponse) as info:
            Token.from_response(body, now=NOW)
        assert words in str(info.value)
        assert isinstance(info.value, TokenError)

    def test_error_message_does_not_quote_the_token(self) -> None:
        with pytest.raises(InvalidTokenResponse) as info:
            Token.from_response({"access_token": "secret-at-123", "expires_in": "soon"}, now=NOW)
        assert "secret-at-123" not in str(info.value)


class TestValue:
    def test_immutable(self) -> None:
        token = Token("abc", expires_at=NOW)
        with pytest.raises(AttributeError):
            token.access_token = "other"  # type: ignore[misc]
        with pytest.raises(AttributeError):
            del token.expires_at  # type: ignore[misc]
        assert token.access_token == "abc"

    def test_equality_by_access_token(self) -> None:
        assert Token("abc", expires_at=1) == Token("abc", expires_at=2)
        assert Token("abc") != Token("abd")
        assert len({Token("abc"), Token("abc"), Token("xyz")}) == 2

    def test_repr_and_str_hide_the_secrets(self) -> None:
        token = Token("access-123456", refresh_token="refresh-654321", scope="read")
        for text in (repr(token), str(token), f"{token}", f"{token!r}"):
            assert "access-123456" not in text
            assert "refresh-654321" not in text
            assert token.fingerprint in text
            assert "refresh_token=***" in text

    def test_fingerprint_tells_tokens_apart(self) -> None:
        assert Token("a").fingerprint != Token("b").fingerprint
        assert Token("a").fingerprint == Token("a").fingerprint

    def test_expired_and_expires_in_use_the_wall_clock(self) -> None:
        now = time.time()
        assert Token("a", expires_at=now - 1).expired is True
        fresh = Token("a", expires_at=now + 600)
        assert fresh.expired is False
        assert fresh.expires_in is not None
        assert 590 < fresh.expires_in <= 600

    def test_dict_round_trip(self) -> None:
        token = Token.from_response(
            {
                "access_token": "abc",
                "token_type": "MAC",
                "expires_in": 60,
                "refresh_token": "rt",
                "scope": "a b",
                "id_token": "i",
            },
            now=NOW,
        )
        data = json.loads(json.dumps(token.to_dict()))
        again = Token.from_dict(data)
        assert again == token
        for name in ("token_type", "expires_at", "refresh_token", "scope", "issued_at"):
            assert getattr(again, name) == getattr(token, name)
        assert again.extra == {"id_token": "i"}

    def test_minimal_dict_round_trip(self) -> None:
        token = Token("abc")
        again = Token.from_dict(token.to_dict())
        assert (again.access_token, again.expires_at, again.refresh_token) == ("abc", None, None)

    @pytest.mark.parametrize(
        "data",
        [
            None,
            [],
            {},
            {"access_token": 1},
            {"access_token": "a", "expires_at": "later"},
            {"access_token": "a", "expires_at": float("inf")},
            {"access_token": "a", "expires_at": 10**400},
            {"access_token": "a", "issued_at": True},
            {"access_token": "a", "refresh_token": 1},
            {"access_token": "a", "extra": [1]},
            {"access_token": "a\nb"},
        ],
    )
    def test_from_dict_rejects_what_to_dict_never_makes(self, data: object) -> None:
        with pytest.raises(InvalidTokenResponse):
            Token.from_dict(data)

    def test_pickle_round_trip(self) -> None:
        token = Token("abc", expires_at=NOW, refresh_token="rt")
        again = pickle.loads(pickle.dumps(token))  # noqa: S301 - our own data
        assert again == token
        assert again.refresh_token == "rt"
        assert again.expires_at == NOW
