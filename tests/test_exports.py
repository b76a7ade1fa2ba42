"""The public namespace: everything public is in ``alf_session.__all__``, sorted."""

from __future__ import annotations

import inspect

import alf_session


def public_names() -> set[str]:
    return {
        name
        for name, value in vars(alf_session).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and type(value).__module__ != "__future__"  # `from __future__ import annotations`
    }


def test_all_is_sorted() -> None:
    assert alf_session.__all__ == sorted(alf_session.__all__)


def test_all_lists_exactly_the_public_names() -> None:
    assert len(alf_session.__all__) == len(set(alf_session.__all__))
    assert set(alf_session.__all__) == public_names()


def test_every_name_comes_from_the_package() -> None:
    for name in alf_session.__all__:
        obj = getattr(alf_session, name)
        assert obj.__module__.startswith("alf_session"), name


def test_design_contract_names_are_exported() -> None:
    # The names DESIGN.md promises; the tests of users rely on them.
    promised = {
        "TokenSession",
        "TokenManager",
        "Token",
        "ClientCredentials",
        "PasswordCredentials",
        "BearerAuth",
        "TokenAdapter",
        "MemoryStorage",
        "TokenError",
        "OAuthError",
        "InvalidClient",
        "InvalidGrant",
        "InvalidScope",
        "UnauthorizedClient",
        "UnsupportedGrantType",
        "InvalidRequest",
    }
    assert promised <= set(alf_session.__all__)


def test_error_hierarchy() -> None:
    from alf_session import OAuthError, TokenError

    for name in alf_session.__all__:
        obj = getattr(alf_session, name)
        if inspect.isclass(obj) and issubclass(obj, Exception):
            assert issubclass(obj, TokenError), name
    for name in (
        "InvalidClient",
        "InvalidGrant",
        "InvalidScope",
        "UnauthorizedClient",
        "UnsupportedGrantType",
        "InvalidRequest",
    ):
        assert issubclass(getattr(alf_session, name), OAuthError)


def test_version() -> None:
    assert isinstance(alf_session.__version__, str)
    assert alf_session.__version__.count(".") >= 2
