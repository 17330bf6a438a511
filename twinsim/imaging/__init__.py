"""Imaging: C-arm geometry (and, later, DRRs). The PyBullet C-arm body uses this geometry."""

from twinsim.imaging.carm_geometry import CArmGeometry, PatientAxes, carm_pose

__all__ = ["CArmGeometry", "PatientAxes", "carm_pose"]
