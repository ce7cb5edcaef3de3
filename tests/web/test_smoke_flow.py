"""The tenant admin's main path: add a router, a worker provisions it, download its configs."""

from portal.extensions import db
from portal.wireguard.models import Router
from tests.conftest import add_router, run_worker


def test_add_router_then_worker_makes_it_active_and_downloads_work(app, admin_client):
    response = add_router(admin_client, "Core 1", "rack 3")
    assert response.status_code == 303
    router_url = response.headers["Location"]
    assert "pending" in admin_client.get(router_url).get_data(as_text=True)

    run_worker(app)

    page = admin_client.get(router_url).get_data(as_text=True)
    assert "status-active" in page
    assert "not managed by the portal" in page
    with app.app_context():
        router = db.session.get(Router, int(router_url.rsplit("/", 1)[1]))
        configuration = router.current_configuration
        address, configuration_id = configuration.address, configuration.id
    rsc = admin_client.get(f"/configurations/{configuration_id}/download.rsc")
    assert rsc.status_code == 200
    assert rsc.headers["Content-Disposition"] == f'attachment; filename="core-1-cfg{configuration_id}.rsc"'
    assert f"address={address}/24" in rsc.get_data(as_text=True)
    conf = admin_client.get(f"/configurations/{configuration_id}/download.conf")
    assert f"Address = {address}/32" in conf.get_data(as_text=True)
