"""Example services that show every kit pattern; each sub-package is one service."""
