"""RouterOS API access to tenants' routers: the client (`client`), per-router access and requests (`service`),
pushes and key rotations that wait for the hub to see the router's handshake (`models`, `jobs`), and the hub's
side of it (`hub`). The views are `portal.wireguard.routeros_views`, on the router page."""
