"""Property-based tests (Hypothesis) of what people and programs type into the portal: names, notes, e-mail
addresses, search terms and API bodies, through the forms and the API. Nothing may answer 5xx, and nothing
typed may escape into a rendered `.rsc`, `.conf`, `.ovpn`, SSH command line or HTML page.

Runs are reproducible: `PORTAL_FUZZ_SEED=N` fixes the seed (CI, where `CI` is set, uses 0); otherwise each run
picks one, and a failure names it so the same run can be repeated.
"""
