"""Minion pools: the pool manager (life cycle of pools and their machines, allocation of
machines to transfers)."""
