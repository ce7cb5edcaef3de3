"""Fixed keys for tests. Never used outside tests."""

# RFC 7748 section 6.1 (Alice), in WireGuard's base64: `wg pubkey` gives the same public key.
RFC7748_PRIVATE = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo="
RFC7748_PUBLIC = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="

SECRET_KEY = "tEsT-only_5ecret-K3y-d0NotUse-in-Pr0ducti0n-9Zq"  # strong-looking, so production settings take it
ENCRYPTION_KEY = "zZ2kX0pXGvXq0y3F9Vbq8vJrNn1uQmW5bUu0Ssa7JtI="
OLD_ENCRYPTION_KEY = "3Jq6m0cS6kUq8i2m5R9lQ5dHj1wQWl6Yb8cQw2c5Nf0="
HUB_PUBLIC_KEY = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
HUB_ENDPOINT = "hub.test.example"
PASSWORD = "correct horse battery"
