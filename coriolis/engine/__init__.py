"""The conductor: task graphs, the execution state machine, cancel, cleanup and recovery."""
