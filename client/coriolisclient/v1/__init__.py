"""Managers of the Coriolis v1 API resources."""
