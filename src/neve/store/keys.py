"""Users, their groups, and API keys. A key is shown once, when created; the database
keeps its SHA-256 (keys are 256 random bits, so a fast hash is enough)."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from neve.errors import NotFound
from neve.store.db import Store
from neve.store.tables import ApiKey, Group, Membership, User, now

Role = Literal["admin", "user"]
KEY_PREFIX = "neve-"


@dataclass(frozen=True)
class Identity:
    """Who is calling: the user, their groups and role, and the key used (if any)."""

    user: str
    role: Role = "user"
    groups: frozenset[str] = field(default_factory=frozenset)
    key_id: str | None = None
    rpm: int | None = None
    tpm: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class KeyInfo:
    id: str
    user: str
    role: str
    groups: list[str]
    prefix: str
    rpm: int | None
    tpm: int | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class UnknownKey(NotFound):
    """No such key (or several match); the message names what was asked for."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    store: Store,
    user: str,
    *,
    role: Role = "user",
    groups: list[str] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
) -> tuple[str, KeyInfo]:
    """A new key for `user` (created when new). Given groups replace the user's groups."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with store.writing() as session:
        owner = _user(session, user)
        if groups is not None:
            _set_groups(session, owner, groups)
        row = ApiKey(
            id=secrets.token_hex(6),
            user_id=owner.id,
            role=role,
            digest=digest(key),
            prefix=key[: len(KEY_PREFIX) + 6],
            rpm=rpm,
            tpm=tpm,
            created_at=now(),
        )
        session.add(row)
        session.flush()
        return key, _info(row, owner, _groups_by_user(session).get(owner.id, []))


def list_keys(store: Store, *, include_revoked: bool = False) -> list[KeyInfo]:
    with store.reading() as session:
        query = select(ApiKey, User).join(User).order_by(ApiKey.created_at)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        groups = _groups_by_user(session)
        return [_info(key, user, groups.get(user.id, [])) for key, user in session.execute(query)]


def revoke_key(store: Store, key_id: str) -> KeyInfo:
    """Revoke by id or by the shown prefix."""
    with store.writing() as session:
        query = select(ApiKey, User).join(User)
        by = ApiKey.prefix if key_id.startswith(KEY_PREFIX) else ApiKey.id
        found = session.execute(query.where(by == key_id)).all()
        if len(found) != 1:
            raise UnknownKey(
                f"no key {key_id!r}" if not found else f"{key_id!r} names several keys; use its id"
            )
        key, user = found[0]
        key.revoked_at = key.revoked_at or now()
        return _info(key, user, _groups_by_user(session).get(user.id, []))


@dataclass(frozen=True)
class KeySnapshot:
    """What the API needs to know callers: usable keys by digest, each user's groups, and
    whether any key was ever made (revoking the last key must not open the API)."""

    identities: dict[str, Identity]
    groups: dict[str, frozenset[str]]
    exist: bool


def snapshot(store: Store) -> KeySnapshot:
    with store.reading() as session:
        groups = _groups_by_user(session)
        users = dict(session.execute(select(User.id, User.name)).all())
        identities = {}
        exist = False
        # Each key with its user in one statement: under PostgreSQL's read committed, a
        # user and key made between two statements would leave the key without its user.
        for key, name in session.execute(select(ApiKey, User.name).join(User)):
            exist = True
            if key.revoked_at is None:
                identities[key.digest] = Identity(
                    user=name,
                    role="admin" if key.role == "admin" else "user",
                    groups=frozenset(groups.get(key.user_id, ())),
                    key_id=key.id,
                    rpm=key.rpm,
                    tpm=key.tpm,
                )
        by_name = {name: frozenset(groups.get(uid, ())) for uid, name in users.items()}
        return KeySnapshot(identities, by_name, exist)


def _groups_by_user(session: Session) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for uid, name in session.execute(select(Membership.user_id, Group.name).join(Group)):
        out.setdefault(uid, []).append(name)
    return out


def _user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, created_at=now())
        session.add(user)
        session.flush()
    return user


def _set_groups(session: Session, user: User, names: list[str]) -> None:
    session.execute(delete(Membership).where(Membership.user_id == user.id))
    for name in sorted(set(names)):
        group = session.scalar(select(Group).where(Group.name == name))
        if group is None:
            group = Group(name=name)
            session.add(group)
            session.flush()
        session.add(Membership(user_id=user.id, group_id=group.id))


def _info(key: ApiKey, user: User, groups: list[str]) -> KeyInfo:
    return KeyInfo(
        id=key.id,
        user=user.name,
        role=key.role,
        groups=sorted(groups),
        prefix=key.prefix,
        rpm=key.rpm,
        tpm=key.tpm,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )
