"""Fixtures for engine tests that need a real Redis (`make test` starts one)."""

from __future__ import annotations

import os
import uuid

import pytest
import redis


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses, so tests can share one server."""
    return f"fxt{uuid.uuid4().hex[:16]}"


@pytest.fixture
def redis_url(redis_prefix):
    """URL of the test redis-server; the keys under `redis_prefix` are deleted before and after.

    Skips when TEST_REDIS_URL is unset (plain `pytest`); fails when it
    is set but the server does not answer, since then the set-up is broken.
    """
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set: run `make test` (it starts a throwaway "
                    "redis-server) or `scripts/redis-test-server.sh run pytest ...`")
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"TEST_REDIS_URL={url} does not answer: {exc}")

    def flush() -> None:
        # Every key of a tier starts with its hash tag "{prefix:cache_name}".
        names = list(client.scan_iter(match=f"{{{redis_prefix}:*", count=1000))
        if names:
            client.delete(*names)

    flush()
    try:
        yield url
    finally:
        flush()
        client.close()
