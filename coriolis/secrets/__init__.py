"""Encryption at rest of connection info, and secret references (Barbican-style)."""
