"""Interop harnesses: kit's events read and written by programs in other languages."""
