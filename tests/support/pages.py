"""A portal with something on every page: one tenant with routers in several states (one with a 64-character
name), a CSV import, an OpenVPN client, an e-mailed download link, an API token, one-time account links, and
the staff who look after it. Used by the page-by-page checks in tests/system/test_pages_layout.py."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import (
    Outbox,
    add_router,
    create_staff,
    create_tenant_admin,
    login,
    post,
    router_id_from,
    run_worker,
    unique,
)

# A name as long as names go, without a space to break at: the worst case for a table or a heading.
LONG_NAME = ("Branch-office-north-east-" * 3)[:64]
IMPORT_CSV = "name,note,api_address,api_username\nDepot 1,Behind the warehouse,10.1.0.1,portal\nDepot 2,,,\n"
LANDING = re.compile(r"https?://[^/\s]+(/l/[A-Za-z0-9_-]+)")


@dataclass(frozen=True)
class Seed:
    tenant_id: int
    admin_email: str
    admin_user_id: int
    platform_admin_email: str
    support_email: str
    visiting_support_email: str  # a second support user, so signing in and starting a visit wait for no code
    router_id: int  # active, 64-character name
    pending_router_id: int
    configuration_id: int  # of router_id
    hub_id: int
    import_id: int
    openvpn_server_id: int
    openvpn_client_id: int  # active
    link_token: str  # an e-mailed download link, not used yet
    invite_token: str
    reset_token: str

    missing_id: int = 2_000_000_000  # no row has it

    def __getitem__(self, name: str):
        return getattr(self, name)


def seed_portal(app) -> Seed:
    tenant_id, admin_email = create_tenant_admin(app)
    admin = app.test_client()
    assert login(admin, admin_email).status_code == 302
    router_id = router_id_from(add_router(admin, LONG_NAME, note="Rack 2, the cabinet by the loading door"))
    add_router(admin, "Branch 2", note="Spare")
    import_id = _import_routers(admin)
    with pytest.MonkeyPatch.context() as patch:
        openvpn_server_id, openvpn_client_id = _openvpn_client(app, admin, patch)
        run_worker(app)
    pending_router_id = router_id_from(add_router(admin, "Branch 3 waiting"))  # added after the worker ran
    configuration_id, hub_id = _configuration_and_hub(app, router_id)
    with pytest.MonkeyPatch.context() as patch:
        link_token = _emailed_link(app, admin, patch, configuration_id, router_id)
    _api_token(app, tenant_id)
    admin_user_id, invite_token, reset_token = _account_links(app, tenant_id, admin_email)
    return Seed(
        tenant_id=tenant_id, admin_email=admin_email, admin_user_id=admin_user_id,
        platform_admin_email=create_staff(app, "platform_admin"), support_email=create_staff(app, "support"),
        visiting_support_email=create_staff(app, "support"),
        router_id=router_id, pending_router_id=pending_router_id, configuration_id=configuration_id, hub_id=hub_id,
        import_id=import_id, openvpn_server_id=openvpn_server_id, openvpn_client_id=openvpn_client_id,
        link_token=link_token, invite_token=invite_token, reset_token=reset_token)


def _import_routers(admin) -> int:
    assert post(admin, "/routers/import", {"text": IMPORT_CSV}).status_code == 200
    confirmed = post(admin, "/routers/import/confirm", {"csv": IMPORT_CSV})
    assert confirmed.status_code == 303, confirmed.get_data(as_text=True)
    return int(confirmed.headers["Location"].rsplit("/", 1)[1])


def _openvpn_client(app, admin, patch: pytest.MonkeyPatch) -> tuple[int, int]:
    """An OpenVPN client on a fake server (the script contract in memory); provisioned by the caller's worker."""
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.openvpn import drivers, servers
    from portal.openvpn.models import OpenVpnServer
    from tests.openvpn.test_openvpn import FakeServer

    fake = FakeServer()
    patch.setattr(drivers, "runner_for", lambda kind, row, label: fake)
    with app.app_context():
        server = db.session.scalar(select(OpenVpnServer).where(OpenVpnServer.accepts_new_clients))
        if server is None:
            server = servers.save_server(Actor.system("test"), servers.ServerSettings(
                name=unique("pages-ovpn").replace(" ", "-"), remote_host="vpn.test.example", driver="local",
                base_dir="/nonexistent/openvpn"))
            db.session.commit()
        server_id = server.id
    added = post(admin, "/openvpn/clients/new", {"name": "laptop-anna"}, token_page="/openvpn/clients/new")
    assert added.status_code == 303, added.get_data(as_text=True)
    return server_id, int(added.headers["Location"].rsplit("/", 1)[1])


def _configuration_and_hub(app, router_id: int) -> tuple[int, int]:
    from portal.extensions import db
    from portal.wireguard.models import Router

    with app.app_context():
        configuration = db.session.get(Router, router_id).current_configuration
        assert configuration.status == "active"
        return configuration.id, configuration.hub_id


def _emailed_link(app, admin, patch: pytest.MonkeyPatch, configuration_id: int, router_id: int) -> str:
    with tempfile.TemporaryDirectory(prefix="pages-outbox-") as folder:
        patch.setitem(app.config, "PORTAL_MAIL_HOST", None)
        patch.setitem(app.config, "PORTAL_MAIL_OUTBOX", folder)
        sent = post(admin, f"/links/configurations/{configuration_id}/email",
                    {"recipient": "technician@mail.example", "hours": 72, "file_format": "rsc"},
                    token_page=f"/routers/{router_id}")
        assert sent.status_code in (200, 303), sent.get_data(as_text=True)
        text = Outbox(Path(folder)).last("technician@mail.example").get_body(("plain",)).get_content()
    return LANDING.search(text).group(1).removeprefix("/l/")


def _api_token(app, tenant_id: int) -> None:
    from portal.api import tokens
    from portal.audit.service import Actor
    from portal.extensions import db

    with app.app_context():
        tokens.create(Actor.system("test"), tenant_id, "Nightly inventory export", "read", 30)
        db.session.commit()


def _account_links(app, tenant_id: int, admin_email: str) -> tuple[int, str, str]:
    """The admin's user id, and an unused invitation and password-reset token of two more users."""
    from portal.account.service import issue_link
    from portal.audit.service import Actor
    from portal.auth.models import TokenPurpose
    from portal.extensions import db
    from portal.tenancy import service
    from portal.tenancy.models import Role, User
    from tests import vectors

    actor = Actor.system("test")
    with app.app_context():
        invited, forgetful = (service.create_user(actor, f"{unique(kind).replace(' ', '-')}@tenant.example",
                                                  vectors.PASSWORD, Role.TENANT_ADMIN, tenant_id)
                              for kind in ("invited", "forgetful"))
        invite_token = issue_link(actor, invited, TokenPurpose.INVITE, 48)
        reset_token = issue_link(actor, forgetful, TokenPurpose.PASSWORD_RESET, 2)
        admin_user_id = db.session.scalar(select(User.id).where(func.lower(User.email) == admin_email.lower()))
        db.session.commit()
    return admin_user_id, invite_token, reset_token
