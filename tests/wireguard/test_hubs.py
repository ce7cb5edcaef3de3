"""Platform admins add and edit hubs in the portal: errors beside the field, keys encrypted, nothing half-saved."""

from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import func, select, text, update

from portal.extensions import db
from portal.ssh import fingerprint
from portal.wireguard.models import Hub
from tests.conftest import login, post, unique
from tests.web.test_ssh import private_text, public_line


@pytest.fixture(autouse=True)
def retire_hubs_afterwards(app):
    """Later tests must not find these hubs managed: the reconciler would try to reach them."""
    yield
    with app.app_context():
        db.session.execute(update(Hub).where(Hub.name.startswith("hub ")).values(driver="none"))
        db.session.commit()


@pytest.fixture
def staff(app, platform_admin):
    client = app.test_client()
    login(client, platform_admin)
    return client


def ssh_hub_form(name: str, **changes) -> dict:
    key = ed25519.Ed25519PrivateKey.generate()
    return {"name": name, "endpoint_host": "hub.example.net", "endpoint_port": "51820", "interface": "wg0",
            # not open to new tenants: later tests' tenants must not land on a hub that does not exist
            "driver": "ssh", "ssh_host": "hub-ssh.example.net", "ssh_port": "22",
            "ssh_user": "root", "ssh_host_key": public_line(ed25519.Ed25519PrivateKey.generate()),
            "ssh_private_key": private_text(key), **changes}


def hub_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(Hub.id)))


def field_error(page: str, field: str) -> str:
    match = re.search(rf'<p class="field-error" id="{field}-error">([^<]*)</p>', page)
    return match.group(1) if match else ""


def test_the_add_hub_form_renders(staff):
    page = staff.get("/admin/hubs/new")
    assert page.status_code == 200
    assert 'name="ssh_host_key"' in page.get_data(as_text=True)


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"ssh_host_key": "ssh-ed25519 not-base64"}, "ssh_host_key", "not valid base64"),
    ({"ssh_host_key": ""}, "ssh_host_key", "needs its host key"),
    ({"ssh_private_key": "-----BEGIN NONSENSE-----"}, "ssh_private_key", "private key"),
    ({"interface": "wg0; reboot"}, "interface", "interface"),
    ({"ssh_host": ""}, "ssh_host", "needs the host"),
])
def test_a_bad_value_is_shown_beside_its_field_and_saves_nothing(app, staff, changes, field, message):
    before = hub_count(app)
    response = post(staff, "/admin/hubs/new", ssh_hub_form(unique("hub"), **changes), token_page="/admin/hubs/new")
    assert response.status_code == 422
    assert message in field_error(response.get_data(as_text=True), field).lower()
    assert hub_count(app) == before


def test_a_saved_hub_shows_its_fingerprint_and_keeps_its_ssh_key_encrypted(app, staff):
    form = ssh_hub_form(unique("hub"))
    response = post(staff, "/admin/hubs/new", form, token_page="/admin/hubs/new")
    assert response.status_code == 303
    assert fingerprint(form["ssh_host_key"]) in staff.get("/admin/hubs").get_data(as_text=True)
    with app.app_context():
        hub = db.session.scalar(select(Hub).where(Hub.name == form["name"]))
        stored = db.session.execute(text("SELECT ssh_private_key FROM hubs WHERE id = :id"), {"id": hub.id}).scalar()
        assert "PRIVATE KEY" not in stored and hub.ssh_private_key == form["ssh_private_key"]
        hub_id = hub.id

    # Editing with the key field left empty keeps the stored key; a taken name is refused beside the name.
    edited = post(staff, f"/admin/hubs/{hub_id}/edit", {**form, "ssh_private_key": "", "endpoint_port": "51821"},
                  token_page=f"/admin/hubs/{hub_id}/edit")
    assert edited.status_code == 303
    with app.app_context():
        hub = db.session.get(Hub, hub_id)
        assert (hub.endpoint_port, hub.ssh_private_key) == (51821, form["ssh_private_key"])
    other = post(staff, "/admin/hubs/new", ssh_hub_form(form["name"].upper()), token_page="/admin/hubs/new")
    assert other.status_code == 422
    assert "already a hub named" in field_error(other.get_data(as_text=True), "name")


def test_an_unmanaged_hubs_public_key_is_set_on_its_edit_page_and_reaches_the_next_download(app, staff,
                                                                                            admin_client):
    from portal.wireguard.models import Router
    from tests import vectors
    from tests.conftest import add_router, router_id_from, run_worker

    router_id = router_id_from(add_router(admin_client, "Rekeyed hub"))
    run_worker(app)
    with app.app_context():
        configuration = db.session.get(Router, router_id).configurations[0]
        hub_id, configuration_id = configuration.hub_id, configuration.id
        hub = db.session.get(Hub, hub_id)
        form = {"name": hub.name, "endpoint_host": "vpn.example.org", "endpoint_port": str(hub.endpoint_port),
                "interface": hub.interface, "driver": "none", "accepts_new_tenants": "y", "ssh_port": "22",
                "ssh_user": "root"}
        assert hub.driver == "none" and hub.public_key == vectors.HUB_PUBLIC_KEY
    edit = f"/admin/hubs/{hub_id}/edit"
    assert 'name="public_key"' in staff.get(edit).get_data(as_text=True)
    bad = post(staff, edit, {**form, "public_key": "not a key"}, token_page=edit)
    assert bad.status_code == 422 and field_error(bad.get_data(as_text=True), "public_key")

    new_key = "q0Wkz5cBlOqjPHWMUVdT/7S6ayxxqAmzBbCzeFr+Sm8="
    try:
        assert post(staff, edit, {**form, "public_key": new_key}, token_page=edit).status_code == 303
        conf = admin_client.get(f"/configurations/{configuration_id}/download.conf").get_data(as_text=True)
        assert f"PublicKey = {new_key}" in conf and "Endpoint = vpn.example.org:" in conf
    finally:
        with app.app_context():
            db.session.execute(update(Hub).where(Hub.id == hub_id).values(public_key=vectors.HUB_PUBLIC_KEY,
                                                                          endpoint_host=vectors.HUB_ENDPOINT))
            db.session.commit()
