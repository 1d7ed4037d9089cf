"""Background scheduling: replica cron (and later worker placement and pool upkeep)."""
