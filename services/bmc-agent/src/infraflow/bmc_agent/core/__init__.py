"""Pure bmc-agent logic (no I/O)."""
