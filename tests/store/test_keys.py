"""API keys: shown once, stored as a hash, listed, revoked; with their user's groups."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from neve.store import keys
from neve.store.db import Store


def test_a_key_is_stored_as_its_hash_only(store: Store) -> None:
    key, info = keys.create_key(store, "alice", role="admin", groups=["hr", "finance"], rpm=5)
    assert key.startswith("neve-") and len(key) > 40
    with store.reading() as session:
        dumped = " ".join(str(row) for row in session.execute(text("SELECT * FROM api_keys")).all())
    assert key not in dumped and key[6:] not in dumped
    assert keys.digest(key) in dumped
    known = keys.snapshot(store).identities[keys.digest(key)]
    assert (known.user, known.role, known.groups, known.rpm) == (
        "alice", "admin", frozenset({"hr", "finance"}), 5,
    )  # fmt: skip
    assert info.groups == ["finance", "hr"]


def test_groups_belong_to_the_user_and_new_groups_replace_them(store: Store) -> None:
    first, _ = keys.create_key(store, "bob", groups=["a", "b"])
    second, _ = keys.create_key(store, "bob", groups=["c"])
    third, _ = keys.create_key(store, "bob")  # no --groups: the user's stay
    snapshot = keys.snapshot(store)
    for key in (first, second, third):
        assert snapshot.identities[keys.digest(key)].groups == {"c"}
    assert snapshot.groups == {"bob": frozenset({"c"})}


def test_revoked_keys_stop_working_but_still_count_as_existing(store: Store) -> None:
    assert keys.snapshot(store).exist is False
    key, info = keys.create_key(store, "carol")
    keys.revoke_key(store, info.prefix)
    snapshot = keys.snapshot(store)
    assert keys.digest(key) not in snapshot.identities
    assert snapshot.exist  # revoking the last key must not open the API
    assert keys.list_keys(store) == []
    assert [k.id for k in keys.list_keys(store, include_revoked=True)] == [info.id]
    with pytest.raises(keys.UnknownKey, match="no key 'nope'"):
        keys.revoke_key(store, "nope")
