"""OpenVPN servers and tenants' OpenVPN clients (one certificate each): models, service, driver, jobs, views."""
