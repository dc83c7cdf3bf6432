"""GET /v1/me: who the hub takes the caller for, so a client (the UI) can sign in with a
key and show only what the caller may use."""

from __future__ import annotations

from fastapi import APIRouter, Request

from neve.api.auth import caller
from neve.protocol.neve import Me

router = APIRouter(prefix="/v1")


@router.get("/me")
def me(request: Request) -> Me:
    who = caller(request)
    return Me(user=who.user, role=who.role, groups=sorted(who.groups), key_id=who.key_id)
