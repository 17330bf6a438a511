"""Workflows: what staff and robots do, written against the HAL interfaces only (never a concrete device)."""
