"""Python bindings and command line for the Coriolis v1 API."""

__version__ = "0.1.0"
