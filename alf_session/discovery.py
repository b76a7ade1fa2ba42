"""Authorization server metadata: ``issuer=`` in place of a token endpoint.

The metadata document is looked for where OpenID Connect Discovery 1.0 §4
puts it (``{issuer}/.well-known/openid-configuration``), then where RFC 8414
§3.1 does (``/.well-known/oauth-authorization-server`` inserted between the
host and the issuer's path). A document is accepted only if:

* its ``issuer`` is exactly the one given (RFC 8414 §3.3, OIDC Discovery
  §4.3): the defence against an attacker's server posing as another;
* it names a ``token_endpoint``, and that endpoint and the ``mtls_endpoint_aliases``
  (RFC 8705 §5) obey the same transport rule as a configured endpoint
  (``https://``, or ``http://`` on loopback);
* it is a JSON object under 1 MiB, answered within the token timeout, with
  no redirect followed.

A document is fetched once per issuer and process (at the first token
request, never when a provider is built), kept for an hour, and shared by the
providers of that issuer. A failure is not kept: the manager's
``failure_ttl`` already spaces out the attempts.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from .errors import ConfigurationError, DiscoveryError, InsecureTransportError, TokenError

__all__ = ["ServerMetadata", "check_issuer", "clear_cache", "discover", "metadata_urls"]

log = logging.getLogger(__name__)

_MAX_BODY = 1024 * 1024
_CACHE_SIZE = 32
_CACHE_AGE = 3600.0
_cache: OrderedDict[tuple[str, bool], tuple[float, ServerMetadata]] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class ServerMetadata:
    """The parts of an authorization server's metadata that alf-session uses.

    Attributes:
        issuer: The issuer identifier, equal to the one asked for.
        token_endpoint: The token endpoint URL.
        token_endpoint_auth_methods_supported: The client authentication
            methods the server names (RFC 8414), or ``None`` if it names none.
        mtls_endpoint_aliases: RFC 8705 §5 endpoints for clients that present
            a certificate.
        grant_types_supported: The grant types the server names, or ``None``.
        url: Where the document was found.
        raw: The whole document.

    .. versionadded:: 0.2
    """

    issuer: str
    token_endpoint: str
    token_endpoint_auth_methods_supported: tuple[str, ...] | None = None
    mtls_endpoint_aliases: Mapping[str, str] = field(default_factory=dict)
    grant_types_supported: tuple[str, ...] | None = None
    url: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def token_endpoint_for(self, *, mtls: bool) -> str:
        """The token endpoint, or its mTLS alias when a certificate is presented."""
        if mtls:
            return self.mtls_endpoint_aliases.get("token_endpoint", self.token_endpoint)
        return self.token_endpoint

    @classmethod
    def from_document(
        cls, document: object, *, issuer: str, url: str, allow_insecure_http: bool = False
    ) -> ServerMetadata:
        """Validate a metadata document fetched for ``issuer``.

        Raises:
            DiscoveryError: the document is not acceptable; the message says why.
        """
        from ._transport import check_endpoint

        if not isinstance(document, Mapping):
            raise DiscoveryError(f"metadata at {url} is not a JSON object")
        found = document.get("issuer")
        if found != issuer:
            shown = repr(found[:200]) if isinstance(found, str) else "no issuer"
            hint = ""
            if isinstance(found, str) and found.rstrip("/") == issuer.rstrip("/"):
                hint = f"; pass issuer={found!r} exactly (they differ by a trailing slash)"
            raise DiscoveryError(
                f"metadata at {url} is for {shown}, not for issuer {issuer!r}: refused, "
                f"as RFC 8414 §3.3 requires (a server posing as another){hint}"
            )
        endpoints: dict[str, str] = {}
        aliases_in = document.get("mtls_endpoint_aliases") or {}
        if not isinstance(aliases_in, Mapping):
            raise DiscoveryError(f"metadata at {url}: mtls_endpoint_aliases is not an object")
        try:
            token_endpoint = check_endpoint(
                document.get("token_endpoint"), allow_insecure_http=allow_insecure_http
            )
            for name in ("token_endpoint",):
                if name in aliases_in:
                    endpoints[name] = check_endpoint(
                        aliases_in[name], allow_insecure_http=allow_insecure_http
                    )
        except ConfigurationError as exc:
            kind = "insecure" if isinstance(exc, InsecureTransportError) else "unusable"
            raise DiscoveryError(f"metadata at {url} names an {kind} endpoint: {exc}") from None
        return cls(
            issuer=issuer,
            token_endpoint=token_endpoint,
            token_endpoint_auth_methods_supported=_names(
                document.get("token_endpoint_auth_methods_supported")
            ),
            mtls_endpoint_aliases=endpoints,
            grant_types_supported=_names(document.get("grant_types_supported")),
            url=url,
            raw=dict(document),
        )


def _names(value: object) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def check_issuer(issuer: object, *, allow_insecure_http: bool = False) -> str:
    """Validate an issuer identifier (RFC 8414 §2) and return it.

    Raises:
        ConfigurationError: not an https URL without query or fragment.
        InsecureTransportError: ``http://`` off loopback without the opt-in.
    """
    from ._transport import check_endpoint

    if not isinstance(issuer, str) or not issuer.strip():
        raise ConfigurationError("issuer must be a URL string such as 'https://idp.example'")
    try:
        check_endpoint(issuer, allow_insecure_http=allow_insecure_http)
    except InsecureTransportError:
        raise InsecureTransportError(
            f"issuer {issuer!r} uses http:// to a host that is not loopback; its metadata "
            "(and the token endpoint it names) could be forged on the way. Use https://."
        ) from None
    except ConfigurationError:
        raise ConfigurationError(
            f"issuer {issuer!r} is not an absolute https URL such as 'https://idp.example'"
        ) from None
    parts = urlsplit(issuer)
    if parts.query or parts.fragment:
        raise ConfigurationError(
            f"issuer {issuer!r} has a query or fragment, which RFC 8414 §2 forbids"
        )
    return issuer


def metadata_urls(issuer: str) -> list[str]:
    """Where the metadata of ``issuer`` may be, in the order they are tried."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    oidc = issuer.rstrip("/") + "/.well-known/openid-configuration"
    # RFC 8414 §3.1: the well-known part goes between the host and the path.
    rfc8414 = urlunsplit(
        (parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", "")
    )
    return [oidc, rfc8414]


#: ``fetch(url, deadline)`` -> (HTTP status, body or ``None`` when over 1 MiB):
#: how :func:`discover` reads a URL. It raises a TokenError when it gets no answer.
Fetch = Callable[[str, float], tuple[int, bytes | None]]


def discover(
    issuer: str,
    *,
    timeout: float | tuple[float, float] = 10,
    verify: bool | str = True,
    proxies: Mapping[str, str] | None = None,
    allow_insecure_http: bool = False,
    use_cache: bool = True,
    fetch: Fetch | None = None,
) -> ServerMetadata:
    """Fetch and check the metadata of ``issuer``, or take it from the cache.

    Args:
        issuer: The issuer identifier, exactly as the server states it.
        timeout: Bounds the whole discovery (every URL tried), in seconds; a
            (connect, read) pair bounds it by their sum.
        verify: TLS verification, as in requests.
        proxies: Proxies, as in requests.
        allow_insecure_http: Allow ``http://`` off loopback (issuer and endpoints).
        use_cache: Take a document fetched within the hour.
        fetch: How to read a URL (a provider passes its own, bounded and
            guarded like its token requests); default: a plain GET.

    Raises:
        DiscoveryError: no acceptable document was found; the message says
            what each place answered.

    .. versionadded:: 0.2
    """
    issuer = check_issuer(issuer, allow_insecure_http=allow_insecure_http)
    key = (issuer, bool(verify))
    if use_cache:
        with _cache_lock:
            hit = _cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < _CACHE_AGE:
                _cache.move_to_end(key)
                return hit[1]
    budget = sum(timeout) if isinstance(timeout, tuple) else float(timeout)
    deadline = time.monotonic() + budget
    if fetch is None:
        fetch = functools.partial(_plain_fetch, verify=verify, proxies=proxies, budget=budget)
    tried: list[str] = []
    for url in metadata_urls(issuer):
        if time.monotonic() >= deadline:
            raise DiscoveryError(f"discovery of issuer {issuer!r} ran out of its {budget:g}s")
        try:
            status, body = fetch(url, deadline)
        except DiscoveryError:
            raise
        except TokenError as exc:
            raise DiscoveryError(f"could not fetch metadata from {url}: {exc}") from exc
        if status in (404, 405, 410) or 300 <= status < 400:
            what = f"HTTP {status}"
            if 300 <= status < 400:
                what += " (a redirect, not followed)"
            tried.append(f"{url} answered {what}")
            continue
        if body is None:
            raise DiscoveryError(f"metadata at {url} is over {_MAX_BODY // 1024} KiB")
        if status != 200:
            raise DiscoveryError(
                f"metadata at {url} answered HTTP {status}; the server may be down"
            )
        try:
            document = json.loads(body.decode("utf-8-sig"))
        except (ValueError, RecursionError):
            raise DiscoveryError(f"metadata at {url} is not JSON") from None
        metadata = ServerMetadata.from_document(
            document, issuer=issuer, url=url, allow_insecure_http=allow_insecure_http
        )
        log.debug("discovered %s at %s", issuer, url)
        with _cache_lock:
            _cache[key] = (time.monotonic(), metadata)
            _cache.move_to_end(key)
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        return metadata
    raise DiscoveryError(
        f"no metadata for issuer {issuer!r}: "
        + "; ".join(tried)
        + ". Check the issuer, or give token_endpoint instead"
    )


def _plain_fetch(
    url: str,
    deadline: float,
    *,
    verify: bool | str,
    proxies: Mapping[str, str] | None,
    budget: float,
) -> tuple[int, bytes | None]:
    """A GET bounded by ``deadline`` between reads (providers pass a stricter fetch)."""
    left = deadline - time.monotonic()
    try:
        with requests.Session() as http:
            response = http.get(
                url,
                headers={"Accept": "application/json"},
                timeout=left,
                allow_redirects=False,
                stream=True,
                verify=verify,
                proxies=dict(proxies) if proxies else None,
                auth=lambda r: r,  # no ~/.netrc credentials on a metadata request
            )
            try:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_content(8192):
                    size += len(chunk)
                    if size > _MAX_BODY:
                        return response.status_code, None
                    if time.monotonic() > deadline:
                        raise DiscoveryError(f"metadata at {url} took over {budget:g}s to arrive")
                    chunks.append(chunk)
                return response.status_code, b"".join(chunks)
            finally:
                response.close()
    except DiscoveryError:
        raise  # a TokenError is a requests.RequestException too
    except requests.RequestException as exc:
        raise DiscoveryError(f"could not fetch metadata from {url}: {type(exc).__name__}") from exc


def clear_cache() -> None:
    """Forget every cached document (tests, or after an issuer moved)."""
    with _cache_lock:
        _cache.clear()
