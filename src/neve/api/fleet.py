"""What a hub shares with the other instances of its fleet (setting `instances` above 1),
and where: everything in the database (PostgreSQL), so a fleet needs nothing to run but
what one hub on PostgreSQL needs. One instance keeps limits and retry answers in memory
and its documents in its own index."""

from __future__ import annotations

from neve.api.auth import RateLimiter, SharedRateLimiter
from neve.config import Settings
from neve.rag.embedder import Embedder
from neve.rag.service import Rag
from neve.snowflake.relay import BatchAnswers, RetryCache
from neve.store.batches import SharedRetryCache
from neve.store.db import Store
from neve.store.documents import SharedDocuments
from neve.store.limits import SharedWindows


def is_fleet(settings: Settings) -> bool:
    return settings.instances > 1


def rate_limiter(settings: Settings, store: Store) -> RateLimiter:
    if is_fleet(settings):
        windows = SharedWindows(store, settings.database_pool, settings.database_timeout)
        return SharedRateLimiter(windows, settings.default_rpm, settings.default_tpm)
    return RateLimiter(settings.default_rpm, settings.default_tpm)


def batch_answers(settings: Settings, store: Store) -> BatchAnswers:
    if is_fleet(settings):
        return SharedRetryCache(store, settings.relay_retry_ttl, settings.relay_claim_timeout)
    return RetryCache(settings.relay_retry_ttl, settings.relay_retry_entries)


def rag(settings: Settings, embedder: Embedder, store: Store) -> Rag:
    return Rag(settings, embedder, log=SharedDocuments(store) if is_fleet(settings) else None)


def described(settings: Settings, store: Store) -> str | None:
    """The start-up line's note on shared state; None for one instance."""
    if not is_fleet(settings):
        return None
    return (
        f"one of {settings.instances} instances: keys, limits, relay retries and documents "
        f"shared in {store.shown}"
    )
