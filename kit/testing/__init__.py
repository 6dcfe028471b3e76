"""Test helpers for kit services: broker resolution, harness and pytest plugin."""
