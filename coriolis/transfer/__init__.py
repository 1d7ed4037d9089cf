"""Data path: extents, the copy pipeline, change tracking and the writer agent."""
