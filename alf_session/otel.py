"""OpenTelemetry metrics and spans for every :class:`~alf_session.TokenManager`.

::

    import alf_session.otel
    alf_session.otel.instrument()      # once, at start-up, after your SDK is configured

Needs ``opentelemetry-api`` only (``pip install "alf-session[otel]"``); what
it records goes to whatever SDK and exporters your service configured, and
nowhere when it configured none.

Metrics (``alf_session.credential`` names the credential by a fingerprint on
each of them):

==========================================  ===========  ================================
instrument                                  kind         attributes
==========================================  ===========  ================================
``alf_session.token.requests``              Counter      ``alf_session.outcome``
                                                         (``success``, ``failure``),
                                                         ``alf_session.grant``,
                                                         ``alf_session.background``,
                                                         ``error.type`` on failure
``alf_session.token.request.duration`` (s)  Histogram    the same
``alf_session.token.lookups``               Observable   ``alf_session.cache.tier``:
                                            counter      ``memory``, ``storage``, ``fetch``
``alf_session.storage.errors``              Observable
                                            counter
``alf_session.unauthorized.retries``        Observable   (requests sent again after a 401)
                                            counter
``alf_session.token.remaining_at_renewal``  Histogram    ``alf_session.background``
(s)                                                      (time left on a token replaced)
==========================================  ===========  ================================

Counts that change on every request (lookups served from memory) are not
pushed per request: the observable counters read the managers' own counters
(:attr:`~alf_session.TokenManager.stats`) when a metric reader collects, so a
request served from memory costs exactly what it cost before. Token requests
are rare and recorded as they happen, off the request's thread.

Spans: one per token request, current while it runs (so the span of an
instrumented HTTP client nests under it), following the semantic conventions
for HTTP client spans: named ``POST``, kind ``CLIENT``, with
``http.request.method``, ``server.address``, ``server.port``, ``url.full``
(the token endpoint, without query), and on failure ``error.type`` and
``http.response.status_code`` when the endpoint answered. A custom provider
without a token endpoint gets an ``INTERNAL`` span named
``alf_session token request``. No attribute carries a secret or a token.

.. versionadded:: 0.2
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import _events
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .manager import TokenManager

__all__ = ["instrument", "uninstrument"]

_SCOPE = "alf_session"
# The bucket boundaries the HTTP semantic conventions advise for durations.
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
_REMAINING_BUCKETS = (0, 1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)

_TIER = "alf_session.cache.tier"

_lock = threading.Lock()
_installed: _Instrumentation | None = None


def instrument(meter_provider: Any = None, tracer_provider: Any = None) -> None:
    """Record metrics and spans for every manager of this process, present and future.

    Args:
        meter_provider: The ``MeterProvider`` to record metrics with;
            default: the global one (``opentelemetry.metrics``).
        tracer_provider: The ``TracerProvider`` to record spans with;
            default: the global one (``opentelemetry.trace``).

    Calling it again replaces the previous instrumentation (with the
    providers given this time); :func:`uninstrument` removes it.

    Raises:
        ConfigurationError: ``opentelemetry-api`` is not installed.

    .. versionadded:: 0.2
    """
    global _installed
    instrumentation = _Instrumentation(meter_provider, tracer_provider)
    with _lock:
        previous, _installed = _installed, instrumentation
        if previous is not None:
            previous.remove()
        instrumentation.install()


def uninstrument() -> None:
    """Stop recording (the instruments stay registered, and report nothing new).

    .. versionadded:: 0.2
    """
    global _installed
    with _lock:
        previous, _installed = _installed, None
        if previous is not None:
            previous.remove()


class _Instrumentation:
    def __init__(self, meter_provider: Any, tracer_provider: Any) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            raise ConfigurationError(
                "alf_session.otel needs the OpenTelemetry API: pip install 'alf-session[otel]'"
            ) from None
        from . import __version__

        self._trace = trace
        self.active = True
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
        self.tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        self.requests = meter.create_counter(
            "alf_session.token.requests",
            unit="{request}",
            description="Token requests made to the token endpoint (or a custom provider)",
        )
        self.duration = meter.create_histogram(
            "alf_session.token.request.duration",
            unit="s",
            description="Duration of token requests",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.remaining = meter.create_histogram(
            "alf_session.token.remaining_at_renewal",
            unit="s",
            description="Time that was left on a token when a new one replaced it",
            explicit_bucket_boundaries_advisory=_REMAINING_BUCKETS,
        )
        meter.create_observable_counter(
            "alf_session.token.lookups",
            callbacks=[self._observe_lookups],
            unit="{lookup}",
            description="Tokens handed out, by where they came from: memory, storage or fetch",
        )
        meter.create_observable_counter(
            "alf_session.storage.errors",
            callbacks=[self._observer("storage_errors")],
            unit="{error}",
            description="Storage calls that failed, timed out or returned garbage",
        )
        meter.create_observable_counter(
            "alf_session.unauthorized.retries",
            callbacks=[self._observer("retries_on_401")],
            unit="{retry}",
            description="API requests sent again after the API answered 401",
        )

    def install(self) -> None:
        _events.add_listener(self.on_event)
        _events.add_observer(self.span)

    def remove(self) -> None:
        self.active = False
        _events.remove_listener(self.on_event)
        _events.remove_observer(self.span)

    # -- pushed: token requests, as they happen (in the events thread) ---------

    def on_event(self, event: _events.TokenEvent) -> None:
        if not self.active or event.kind not in ("fetched", "refreshed", "fetch_failed"):
            return
        attributes: dict[str, Any] = {
            "alf_session.credential": event.credential,
            "alf_session.grant": event.grant or "custom",
            "alf_session.background": event.kind == "refreshed",
            "alf_session.outcome": "failure" if event.kind == "fetch_failed" else "success",
        }
        if event.error is not None:
            attributes["error.type"] = event.error.split(":", 1)[0]
        self.requests.add(1, attributes)
        if event.duration is not None:
            self.duration.record(event.duration, attributes)
        if event.remaining is not None:
            self.remaining.record(
                max(0.0, event.remaining),
                {
                    "alf_session.credential": event.credential,
                    "alf_session.background": event.kind == "refreshed",
                },
            )

    # -- observed: counters that move per request, read on collection -----------

    def _totals(self) -> dict[str, list[int]]:
        """Per credential: hits, storage hits, fetches, storage errors, 401 retries."""
        totals: dict[str, list[int]] = {}
        for manager in _events.live_managers():
            stats = manager.stats
            row = totals.setdefault(manager._events.credential, [0, 0, 0, 0, 0])
            row[0] += stats.hits
            row[1] += stats.storage_hits
            row[2] += stats.fetches
            row[3] += stats.storage_errors
            row[4] += stats.retries_on_401
        return totals

    def _observe_lookups(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        if not self.active:
            return []
        return [
            Observation(row[column], {"alf_session.credential": credential, _TIER: tier})
            for credential, row in self._totals().items()
            for column, tier in enumerate(("memory", "storage", "fetch"))
        ]

    def _observer(self, counter: str) -> Any:
        column = {"storage_errors": 3, "retries_on_401": 4}[counter]

        def observe(options: Any) -> Iterable[Any]:
            from opentelemetry.metrics import Observation

            if not self.active:
                return []
            return [
                Observation(row[column], {"alf_session.credential": credential})
                for credential, row in self._totals().items()
            ]

        return observe

    # -- spans: one per token request, current while it runs ----------------------

    @contextlib.contextmanager
    def span(self, manager: TokenManager, grant: str | None, background: bool) -> Iterator[None]:
        trace = self._trace
        attributes: dict[str, Any] = {
            "alf_session.credential": manager._events.credential,
            "alf_session.grant": grant or "custom",
            "alf_session.background": background,
        }
        endpoint = getattr(manager.provider, "token_endpoint", None)
        if isinstance(endpoint, str):
            name, kind = "POST", trace.SpanKind.CLIENT
            parts = urlsplit(endpoint)
            attributes["http.request.method"] = "POST"
            attributes["url.full"] = f"{parts.scheme}://{parts.netloc}{parts.path}"
            if parts.hostname:
                attributes["server.address"] = parts.hostname
            attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
        else:
            name, kind = "alf_session token request", trace.SpanKind.INTERNAL
        with self.tracer.start_as_current_span(
            name,
            kind=kind,
            attributes=attributes,
            # The exception's message is safe (no secret), but its traceback's
            # locals are not ours to ship: record the type only.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except Exception as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if isinstance(status, int):
                    span.set_attribute("http.response.status_code", status)
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
                raise
