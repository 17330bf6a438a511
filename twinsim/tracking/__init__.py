"""Optical tracking: marker geometries, the simulated NDI Polaris Vega, calibration (to come)."""
