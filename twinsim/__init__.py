"""twinsim: a simulation-first digital twin for robot-assisted vertebroplasty."""

__version__ = "0.1.0"
