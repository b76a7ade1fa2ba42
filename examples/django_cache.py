"""Share the token through the cache your Django project already has.

    python examples/django_cache.py

In a Django project, give ``token_storage`` the cache of your settings (Redis,
memcached, database or file based): every gunicorn worker and every pod of
the project then uses one token. For example, in ``orders/clients.py``::

    from django.conf import settings
    from django.core.cache import cache
    from alf_session import TokenSession

    billing = TokenSession(settings.BILLING_TOKEN_URL, settings.BILLING_CLIENT_ID,
                           settings.BILLING_CLIENT_SECRET, token_storage=cache)

The token is stored under a namespaced key with the token's lifetime as the
cache timeout; the client secret is never stored.

This example configures Django by hand with a ``FileBasedCache`` in a temporary
directory, then runs a second process (a second "worker") that finds the
token in that cache. Runs offline against the servers of ``alf-session demo``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile


def setup_django(cache_dir: str) -> None:
    """What settings.py does in a real project."""
    import django
    from django.conf import settings

    settings.configure(
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": cache_dir,
            }
        }
    )
    django.setup()


def call_billing(token_url: str, api_url: str) -> tuple[int, int, int]:
    """A view's work: one request to the billing API. Returns (status, fetches, from cache)."""
    from django.core.cache import cache

    from alf_session import TokenSession

    with TokenSession(
        token_url, "orders-service", os.environ["BILLING_CLIENT_SECRET"], token_storage=cache
    ) as billing:
        response = billing.get(f"{api_url}/invoices")
        stats = billing.token_manager.stats
        return response.status_code, stats.fetches, stats.storage_hits


def main() -> int:
    try:
        import django  # noqa: F401 - only to tell whether it is installed
    except ImportError:
        print("skipped: this example needs Django (pip install django)")
        return 0
    from alf_session.testing import local_servers

    os.environ["BILLING_CLIENT_SECRET"] = "s3cret"  # from your secret store in real life
    with (
        tempfile.TemporaryDirectory(prefix="alf-django-cache-") as cache_dir,
        local_servers(client_id="orders-service", client_secret="s3cret") as (idp, api),
    ):
        setup_django(cache_dir)
        status, fetched, cached = call_billing(idp.token_url, api.base_url)
        print(f"worker 1: HTTP {status}, fetched {fetched} token, {cached} from Django's cache")

        # Another process with the same settings: it finds the token in the cache.
        second = subprocess.run(
            [sys.executable, __file__, "--worker", cache_dir, idp.token_url, api.base_url],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        print(second.stdout.strip())
        print(f"token requests: {idp.count} for both workers")
    return 0


def second_worker(cache_dir: str, token_url: str, api_url: str) -> int:
    setup_django(cache_dir)
    status, fetched, cached = call_billing(token_url, api_url)
    print(f"worker 2: HTTP {status}, fetched {fetched} token, {cached} from Django's cache")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(second_worker(*sys.argv[2:5]))
    sys.exit(main())
