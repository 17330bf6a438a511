"""The PyBullet operating room (simulated reality)."""
