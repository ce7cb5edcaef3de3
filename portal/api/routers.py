"""Changing a router's name and note: what the API's PATCH needs and the WireGuard service does not offer yet.

Like the services, it adds and flushes; the caller commits. Renaming changes nothing on the hub (peers are keyed
by public key) and only the names of later downloads.
"""

from __future__ import annotations

from portal.audit.service import Actor, record
from portal.errors import Conflict
from portal.wireguard.models import Router
from portal.wireguard.service import name_taken, validate_note, validate_router_name


def update_router(actor: Actor, router: Router, *, name: str | None, note: str | None) -> Router:
    details: dict[str, object] = {}
    if name is not None:
        name = validate_router_name(name)
        if name != router.name:
            if name.lower() != router.name.lower() and name_taken(router.tenant_id, name):
                raise Conflict(f"You already have a router named {name!r}.")
            details.update(name=name, previous_name=router.name)
            router.name = name
    if note is not None:
        note = validate_note(note)
        if note != router.note:
            details["note_changed"] = True
            router.note = note
    if details:
        record("router.updated", actor, tenant_id=router.tenant_id, target=router, details=details)
    return router
