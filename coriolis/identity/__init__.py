"""Embedded identity: a Keystone v3 (and v2.0) subset, users, projects, roles and tokens."""
