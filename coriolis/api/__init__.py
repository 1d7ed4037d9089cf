"""HTTP only: routers, request parsing, views and error mapping."""
