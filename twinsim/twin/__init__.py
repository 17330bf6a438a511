"""The twin: what the system knows of the room from its sensors and calibrations, never ground truth."""
