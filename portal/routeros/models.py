"""A push to a router over the RouterOS API: its configuration, or (for a key rotation) new keys.

One row per push, as the router page shows it; jobs move it through its states, fenced by `attempt` like every
worked row (`portal.lifecycle`). A router has at most one push in flight.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.lifecycle import Lifecycle
from portal.types import UTCDateTime
from portal.wireguard.models import Router, VpnConfiguration


class PushStatus(enum.StrEnum):
    PENDING = "pending"  # waits for a worker (or, after a transient error, for its retry_at)
    WORKING = "working"  # a worker is on it
    WAITING = "waiting"  # waits for the router's handshake on the hub, or to retry a rollback
    ACTIVE = "active"  # done: the hub saw the router's handshake (or cannot see any: unmanaged hub)
    FAILED = "failed"  # gave up: nothing to retry (a rotation that failed is back on its old keys)


class PushKind(enum.StrEnum):
    PUSH = "push"  # the configuration as it is
    ROTATE = "rotate"  # a key rotation: the configuration's next keys, then the swap on the hub


class PushStep(enum.StrEnum):
    APPLY = "apply"  # bring the router to the wanted state
    HANDSHAKE = "handshake"  # wait for the router's handshake on the hub
    ROLLBACK = "rollback"  # rotation only: put the old keys back on the router, then drop the new peer


IN_FLIGHT = (PushStatus.PENDING, PushStatus.WORKING, PushStatus.WAITING)
_IN_FLIGHT_SQL = text("status IN ('pending', 'working', 'waiting')")


class RouterPush(Lifecycle, db.Model):
    __tablename__ = "router_pushes"
    IN_FLIGHT = IN_FLIGHT
    REVOCABLE = ()
    RETRYABLE = ()
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in PushStatus)})", name="status"),
        CheckConstraint(f"kind IN ({', '.join(repr(k.value) for k in PushKind)})", name="kind"),
        Index("uq_router_pushes_in_flight_router", "router_id", unique=True,
              sqlite_where=_IN_FLIGHT_SQL, postgresql_where=_IN_FLIGHT_SQL),
        Index("ix_router_pushes_status_updated", "status", "updated_at"),
        Index("ix_router_pushes_router_id", "router_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    router_id: Mapped[int] = mapped_column(ForeignKey("routers.id"))
    configuration_id: Mapped[int] = mapped_column(ForeignKey("vpn_configurations.id"))
    kind: Mapped[str] = mapped_column(String(16))
    step: Mapped[str] = mapped_column(String(16), default=PushStep.APPLY)
    # Rotation: the public key the router is moving to (the configuration's next key when the push began).
    new_public_key: Mapped[str | None] = mapped_column(String(44))
    # When the router may have taken the keys (the handshake must come after), and until when it may come.
    keys_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    handshake_by: Mapped[datetime | None] = mapped_column(UTCDateTime)
    handshake_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What the push changed on the router, one line per change ("unchanged" when nothing).
    changes: Mapped[str | None] = mapped_column(String(1000))

    router: Mapped[Router] = relationship()
    configuration: Mapped[VpnConfiguration] = relationship()

    @property
    def rotation(self) -> bool:
        return self.kind == PushKind.ROTATE

    @property
    def rolling_back(self) -> bool:
        return self.step == PushStep.ROLLBACK
