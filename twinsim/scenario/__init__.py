"""Scripted scenarios: rehearsals with faults injected into the simulated room, and their verdicts."""
