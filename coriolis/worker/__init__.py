"""Worker service: runs tasks and endpoint operations with the provider plugins."""
