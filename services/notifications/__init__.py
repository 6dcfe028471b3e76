"""The notifications service (being written)."""
