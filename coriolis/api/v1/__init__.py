"""The Coriolis v1 API, one router module per resource family."""
