"""Evaluation code: reads the simulation's ground truth to score what the system produced.

Nothing outside evaluation and the benches may import it (import contracts in ``pyproject.toml``).
"""
