"""The tenant dashboard: subnet usage, routers online, recent audit events; every panel live."""
