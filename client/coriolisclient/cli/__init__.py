"""The `coriolis` command line (cliff)."""
