"""The tenant JSON API at /api (`views`), its tokens and their pages (`tokens`, `pages`), and the OpenAPI document
generated from the operations' declarations (`spec`, `schemas`)."""
