"""The `local` provider: a directory on this host is a cloud (see README, "The local provider")."""
