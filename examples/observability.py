"""See what the token machinery does in production: events and OpenTelemetry.

The story: a service logs one structured line per token event (for its log
pipeline), and exports OpenTelemetry metrics and spans (for its dashboards
and alerts). Requests served from memory produce neither a log line nor a
pushed metric: the lookups are counted by the manager and read when the
metric reader collects.

Runs offline against the demo's local servers:

    python examples/observability.py

The OpenTelemetry part needs ``pip install "alf-session[otel]" opentelemetry-sdk``
and says so when they are missing.
"""

from __future__ import annotations

import json
import logging
import sys

from alf_session import TokenEvent, TokenSession
from alf_session.testing import local_servers

log = logging.getLogger("orders-service.tokens")


def log_event(event: TokenEvent) -> None:
    """One JSON line per event: no secret and no token in it, so it can go anywhere."""
    fields = {
        name: round(value, 3) if isinstance(value, float) else value
        for name, value in event.to_dict().items()
        if value is not None and name != "time"
    }
    log.info(json.dumps(fields, sort_keys=True))


def main() -> None:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="event %(message)s")
    logging.getLogger("alf_session").setLevel(logging.WARNING)  # the library's own lines

    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        print("OpenTelemetry part skipped: pip install opentelemetry-sdk 'alf-session[otel]'")
        reader = spans = None
    else:
        import alf_session.otel

        # In a service: the OTLP exporters your collector reads. Here: memory, printed below.
        reader = InMemoryMetricReader()
        spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        alf_session.otel.instrument(
            meter_provider=MeterProvider(metric_readers=[reader]),
            tracer_provider=tracer_provider,
        )

    with local_servers() as (tokens, api):
        with TokenSession(
            tokens.token_url, tokens.client_id, tokens.client_secret, on_event=log_event
        ) as session:
            for _ in range(20):
                session.get(f"{api.base_url}/orders").raise_for_status()
            tokens.revoke()  # a leak was cleaned up: the API answers 401 to the old token
            session.get(f"{api.base_url}/orders").raise_for_status()
            session.token_manager.flush_events()  # delivered by a background thread
            stats = session.token_manager.stats
            print(f"21 requests: {stats.fetches} token requests, {stats.hits} from memory")

    if reader is None or spans is None:
        return
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = {
                        k.rpartition(".")[2]: v
                        for k, v in (point.attributes or {}).items()
                        if k not in ("alf_session.credential", "alf_session.background")
                    }
                    value = getattr(point, "value", None)
                    if value is None:
                        value = f"count={point.count}"
                    print(f"metric {metric.name} {json.dumps(attributes, sort_keys=True)} {value}")
    for span in spans.get_finished_spans():
        attributes = span.attributes or {}
        print(f"span {span.name} {attributes['url.full']} ({span.kind.name})")


if __name__ == "__main__":
    main()
