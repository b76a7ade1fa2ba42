"""``alf_session.otel.instrument()``: metrics and spans, read back from the SDK's in-memory reader.

Real token server and API on loopback; counts exact. Every test filters on
its own credential: managers of other tests may still be alive.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from alf_session import InvalidClient, TokenManager, TokenSession, _events, otel
from alf_session._servers import APIServer, TokenServer
from alf_session.testing import StaticTokenProvider

from .helpers import CLIENT_SECRET, FakeClock


class Telemetry:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.collections = 0

    def metrics(self, credential: str) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """name -> [(attributes, value or histogram point)] for one credential."""
        assert _events.flush(10)
        gc.collect()
        data = self.reader.get_metrics_data()
        self.collections += 1
        found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        if attributes.get("alf_session.credential") != credential:
                            continue
                        value = getattr(point, "value", point)
                        found.setdefault(metric.name, []).append((attributes, value))
        return found

    def value(self, credential: str, name: str, **attributes: Any) -> Any:
        matching = [
            value
            for attrs, value in self.metrics(credential).get(name, [])
            if all(attrs.get(k) == v for k, v in attributes.items())
        ]
        assert len(matching) == 1, (name, attributes, matching)
        return matching[0]

    def spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    recorded = Telemetry()
    otel.instrument(
        meter_provider=recorded.meter_provider, tracer_provider=recorded.tracer_provider
    )
    try:
        yield recorded
    finally:
        otel.uninstrument()
        _events.flush(10)
        recorded.meter_provider.shutdown()


def credential_of(manager: TokenManager) -> str:
    return manager._events.credential


# -- metrics ------------------------------------------------------------------------------


def test_lookups_by_tier_and_token_requests(
    telemetry: Telemetry,
    make_session: Callable[..., TokenSession],
    api_server: APIServer,
    token_server: TokenServer,
) -> None:
    session = make_session()
    for _ in range(5):
        session.get(f"{api_server.base_url}/orders")
    credential = credential_of(session.token_manager)
    lookups = "alf_session.token.lookups"
    assert telemetry.value(credential, lookups, **{"alf_session.cache.tier": "memory"}) == 4
    assert telemetry.value(credential, lookups, **{"alf_session.cache.tier": "storage"}) == 0
    assert telemetry.value(credential, lookups, **{"alf_session.cache.tier": "fetch"}) == 1
    ok = {"alf_session.outcome": "success", "alf_session.grant": "client_credentials"}
    assert telemetry.value(credential, "alf_session.token.requests", **ok) == 1
    duration = telemetry.value(credential, "alf_session.token.request.duration", **ok)
    assert duration.count == 1
    assert duration.sum >= 0
    assert telemetry.value(credential, "alf_session.storage.errors") == 0
    assert telemetry.value(credential, "alf_session.unauthorized.retries") == 0

    token_server.revoke()
    session.get(f"{api_server.base_url}/orders")
    assert telemetry.value(credential, "alf_session.unauthorized.retries") == 1
    assert telemetry.value(credential, "alf_session.token.requests", **ok) == 2
    assert telemetry.value(credential, lookups, **{"alf_session.cache.tier": "fetch"}) == 2


def test_failed_token_requests_by_error_type(
    telemetry: Telemetry,
    make_manager: Callable[..., TokenManager],
    make_provider: Callable[..., Any],
) -> None:
    manager = make_manager(make_provider(client_secret="wrong"), failure_ttl=0)
    for _ in range(2):
        with pytest.raises(InvalidClient):
            manager.get_token()
    failed = {"alf_session.outcome": "failure", "error.type": "InvalidClient"}
    credential = credential_of(manager)
    assert telemetry.value(credential, "alf_session.token.requests", **failed) == 2
    assert telemetry.value(credential, "alf_session.token.request.duration", **failed).count == 2


def test_storage_hits_and_errors(
    telemetry: Telemetry, make_manager: Callable[..., TokenManager]
) -> None:
    from .test_events import SwitchableStore

    store = SwitchableStore()
    first = make_manager(storage=store)
    second = make_manager(storage=store)
    first.get_token()
    second.get_token()
    second.get_token()
    credential = credential_of(first)
    assert credential == credential_of(second)  # one credential, two managers: summed
    tier = "alf_session.cache.tier"
    lookups = "alf_session.token.lookups"
    assert telemetry.value(credential, lookups, **{tier: "fetch"}) == 1
    assert telemetry.value(credential, lookups, **{tier: "storage"}) == 1
    assert telemetry.value(credential, lookups, **{tier: "memory"}) == 1
    store.down = True
    third = make_manager(storage=store)
    third.get_token()
    errors = third.stats.storage_errors
    assert errors >= 1
    assert telemetry.value(credential, "alf_session.storage.errors") == errors


def test_time_left_at_renewal(
    telemetry: Telemetry, make_manager: Callable[..., TokenManager], clock: FakeClock
) -> None:
    manager = make_manager(refresh_jitter=0)
    manager.get_token()
    clock.advance(3600 * 0.8)
    manager.get_token()
    from .test_events import wait_for_refresh

    wait_for_refresh()
    point = telemetry.value(
        credential_of(manager),
        "alf_session.token.remaining_at_renewal",
        **{"alf_session.background": True},
    )
    assert point.count == 1
    assert point.sum == pytest.approx(3600 * 0.2)
    background = {"alf_session.background": True, "alf_session.outcome": "success"}
    assert telemetry.value(credential_of(manager), "alf_session.token.requests", **background) == 1


def test_cached_requests_cost_nothing_new(
    telemetry: Telemetry,
    make_manager: Callable[..., TokenManager],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager = make_manager()
    manager.get_token()
    assert _events.flush(10)
    pushed: list[str] = []
    installed = otel._installed
    assert installed is not None
    for name in ("requests", "duration", "remaining"):
        instrument = getattr(installed, name)
        for method in ("add", "record"):
            if hasattr(instrument, method):
                monkeypatch.setattr(instrument, method, lambda *a, _n=name, **k: pushed.append(_n))
    queued: list[object] = []
    monkeypatch.setattr(_events._dispatcher, "put", lambda *args: queued.append(args))
    for _ in range(1000):
        manager.get_token()
    assert pushed == []
    assert queued == []
    assert len(telemetry.spans()) == 1  # the one token request
    monkeypatch.undo()
    tier = {"alf_session.cache.tier": "memory"}
    assert telemetry.value(credential_of(manager), "alf_session.token.lookups", **tier) == 1000


def test_uninstrument_stops_recording(
    make_manager: Callable[..., TokenManager],
) -> None:
    recorded = Telemetry()
    otel.instrument(
        meter_provider=recorded.meter_provider, tracer_provider=recorded.tracer_provider
    )
    otel.uninstrument()
    manager = make_manager()
    manager.get_token()
    assert recorded.metrics(credential_of(manager)) == {}
    assert recorded.spans() == []
    recorded.meter_provider.shutdown()


# -- spans ------------------------------------------------------------------------------------


def test_one_client_span_per_token_request(
    telemetry: Telemetry,
    make_session: Callable[..., TokenSession],
    api_server: APIServer,
    token_server: TokenServer,
) -> None:
    session = make_session()
    tracer = telemetry.tracer_provider.get_tracer("the service")
    with tracer.start_as_current_span("handle order"):
        for _ in range(3):
            session.get(f"{api_server.base_url}/orders")
    spans = {span.name: span for span in telemetry.spans()}
    assert sorted(spans) == ["POST", "handle order"]
    span = spans["POST"]
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None
    assert span.parent.span_id == spans["handle order"].context.span_id
    attributes = dict(span.attributes or {})
    assert attributes["http.request.method"] == "POST"
    assert attributes["url.full"] == token_server.token_url
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == token_server.port
    assert attributes["alf_session.grant"] == "client_credentials"
    assert attributes["alf_session.background"] is False
    assert attributes["alf_session.credential"] == credential_of(session.token_manager)
    assert span.status.status_code is StatusCode.UNSET


def test_a_failed_token_request_span(
    telemetry: Telemetry,
    make_manager: Callable[..., TokenManager],
    make_provider: Callable[..., Any],
) -> None:
    manager = make_manager(make_provider(client_secret="wrong-" + CLIENT_SECRET))
    with pytest.raises(InvalidClient):
        manager.get_token()
    (span,) = telemetry.spans()
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "InvalidClient"
    assert attributes["http.response.status_code"] == 401
    assert span.status.status_code is StatusCode.ERROR
    assert span.events == ()  # no exception event: its traceback is not ours to ship


def test_a_custom_provider_gets_an_internal_span(telemetry: Telemetry) -> None:
    manager = TokenManager(StaticTokenProvider("t0k3n-abcdef"))
    manager.get_token()
    (span,) = telemetry.spans()
    assert span.name == "alf_session token request"
    assert span.kind is SpanKind.INTERNAL
    assert dict(span.attributes or {})["alf_session.grant"] == "custom"


def test_no_attribute_carries_a_secret_or_a_token(
    telemetry: Telemetry,
    make_session: Callable[..., TokenSession],
    api_server: APIServer,
    token_server: TokenServer,
) -> None:
    token_server.issue_refresh_tokens = True
    session = make_session()
    session.get(f"{api_server.base_url}/a")
    token_server.revoke()
    session.get(f"{api_server.base_url}/b")
    token_server.fail_next(400, {"error": "invalid_grant"}, times=10)
    session.token_manager.invalidate()
    with pytest.raises(InvalidClient.__base__):  # type: ignore[arg-type]
        session.get(f"{api_server.base_url}/c")
    secrets = {CLIENT_SECRET}
    secrets.update(h[len("Bearer ") :] for h in api_server.seen if h)
    for request in token_server.requests:
        secrets.update(v for k, v in request.form.items() if k == "refresh_token")
    assert len(secrets) >= 3
    recorded = json.dumps(
        [dict(span.attributes or {}) for span in telemetry.spans()]
        + [
            [attrs for attrs, _ in points]
            for points in telemetry.metrics(credential_of(session.token_manager)).values()
        ],
        default=str,
    )
    for secret in secrets:
        assert secret not in recorded


def test_instrument_without_the_api_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from alf_session import ConfigurationError

    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'alf-session\[otel\]'"):
        otel.instrument()
