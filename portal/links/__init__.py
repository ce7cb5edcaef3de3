"""Download links: a configuration or client file sent by e-mail as a one-time link (`/l/<token>`), and the
router one-liner, a link a MikroTik router fetches once itself (`/r/<token>.rsc`)."""
