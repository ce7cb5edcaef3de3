"""Live updates: Socket.IO hints that tell a page which server-rendered fragment to fetch again.

Usable from web processes and RQ workers alike, inside an app context; each helper queues a hint that
is sent after the current transaction commits (`portal.live.emit`). Hints are generic, `(kind, id,
tenant_id)` plus a few ids and a timestamp, so every area (WireGuard configurations, OpenVPN clients) uses
the same ones. Never put a secret in a payload: the room is a whole tenant.

Events (all to the tenant's room, payload always has `at`, the sender's clock in epoch seconds):
- `status`   {kind, id, status, router_id?}   a row's status changed (pending -> provisioning -> active ...)
- `progress` {kind, id, step, router_id?}     a job step was recorded (the audit action, e.g. `...started`)
- `monitor`  {kind, id, online, router_id?}   handshake, endpoint, traffic counters or online state changed
- `usage`    {}                               the tenant's subnet usage changed
- `audit`    {}                               the tenant's audit log has new events

The server side (connect, rooms, disconnects) is `portal.live.server`.
"""

from __future__ import annotations

from portal.live.emit import (
    disconnect_room,
    emit_now,
    queue_disconnect,
    queue_emit,
    session_room,
    tenant_room,
    user_room,
)

__all__ = ["status_changed", "job_step", "monitor_changed", "usage_changed", "audit_recorded", "emit_now",
           "disconnect_user", "disconnect_session", "session_ended", "user_access_changed", "tenant_room"]


def _refs(refs: dict[str, int | None]) -> dict[str, int]:
    return {name: value for name, value in refs.items() if value is not None}


def status_changed(kind: str, row_id: int, tenant_id: int, status: str, **refs: int | None) -> None:
    queue_emit("status", tenant_room(tenant_id), {"kind": kind, "id": row_id, "status": status, **_refs(refs)},
               key=("status", kind, row_id))


def job_step(kind: str, row_id: int, tenant_id: int, step: str, **refs: int | None) -> None:
    queue_emit("progress", tenant_room(tenant_id), {"kind": kind, "id": row_id, "step": step, **_refs(refs)},
               key=("progress", kind, row_id, step))


def monitor_changed(kind: str, row_id: int, tenant_id: int, online: bool, **refs: int | None) -> None:
    queue_emit("monitor", tenant_room(tenant_id), {"kind": kind, "id": row_id, "online": online, **_refs(refs)},
               key=("monitor", kind, row_id))


def usage_changed(tenant_id: int) -> None:
    queue_emit("usage", tenant_room(tenant_id), {}, key=("usage", tenant_id))


def audit_recorded(tenant_id: int) -> None:
    queue_emit("audit", tenant_room(tenant_id), {}, key=("audit", tenant_id))


def disconnect_user(user_id: int) -> bool:
    """Disconnect all of a user's sockets on every web process (role lost, account deactivated)."""
    return disconnect_room(user_room(user_id))


def user_access_changed(user_id: int) -> None:
    """After the commit, disconnect the user's sockets everywhere; they reconnect under the new role or not at
    all (deactivated), and join only the rooms it allows."""
    queue_disconnect(user_room(user_id))


def disconnect_session(login_session_id: int) -> bool:
    """Disconnect the sockets one sign-in session opened, on every web process (logout, impersonation ended)."""
    return disconnect_room(session_room(login_session_id))


def session_ended(login_session_id: int) -> None:
    """Like `disconnect_session`, once the current transaction commits."""
    queue_disconnect(session_room(login_session_id))
