"""Command wiring that opens rigs and scores runs: outside the packages the ground-truth wall encloses."""
