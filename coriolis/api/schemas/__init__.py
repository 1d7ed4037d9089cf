"""Typed request bodies: one pydantic model per body the API takes, so that a malformed body
is a 400 naming its field and /v1/openapi.json documents every body."""
