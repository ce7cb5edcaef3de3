"""Tenants and the people who use the portal."""

from __future__ import annotations

import enum
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.crypto import EncryptedText
from portal.extensions import db
from portal.types import UTCDateTime, utcnow


class Role(enum.StrEnum):
    PLATFORM_ADMIN = "platform_admin"
    SUPPORT = "support"
    TENANT_ADMIN = "tenant_admin"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize()


class Tenant(db.Model):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    # Whether this tenant's routers may reach each other through the hub (they always reach the hub).
    router_to_router: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    users: Mapped[list[User]] = relationship(back_populates="tenant")


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(db.Enum(Role, native_enum=False, length=20,
                                               values_callable=lambda roles: [r.value for r in roles]))
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), index=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Two factors (portal.auth.two_factor): the TOTP secret, encrypted, waiting for a first code until
    # totp_enabled_at is set; and the last 30 s step a code was accepted for, so each code is used once.
    totp_secret: Mapped[str | None] = mapped_column(EncryptedText)
    totp_enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)

    tenant: Mapped[Tenant | None] = relationship(back_populates="users")

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users
        return self.active

    @property
    def label(self) -> str:
        return self.email


class Impersonation(db.Model):
    """A staff member looking at one tenant's pages, for a reason and a limited time.

    It belongs to one sign-in session: signing out, or anything else that ends that session, ends it too.
    """

    __tablename__ = "impersonations"

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    login_session_id: Mapped[int] = mapped_column(ForeignKey("login_sessions.id"), index=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    reason: Mapped[str] = mapped_column(String(500))
    # Changes (add, revoke, rotate, retry) only when the staff member asked for them, with a reason of their own.
    changes_reason: Mapped[str | None] = mapped_column(String(500))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(40))

    staff: Mapped[User] = relationship()
    tenant: Mapped[Tenant] = relationship()

    @property
    def allows_changes(self) -> bool:
        return self.changes_reason is not None
