"""Coriolis: migrate and continuously replicate virtual machines between clouds."""

__version__ = "0.1.0"
