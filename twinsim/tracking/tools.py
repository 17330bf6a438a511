"""The names of the tracked tools: one constant each, shared by the room, the drivers and the twin.

A tool's name is its marker geometry file (``assets/markers/<name>.json``) and its NDI tool
definition (``<name>.rom``).
"""

from __future__ import annotations

REFERENCE = "patient_reference"  # clamped on a spinous process: the frame ``ref``
OPERATION_FLANGE = "operation_flange"  # on the operation robot's flange (hand-eye)
NEEDLE_MARKER = "needle_guide"  # on the needle guide
CARM_MARKER = "carm"  # on the C-arm's detector housing
POINTER = "pointer"  # the hand-held pointer
TRACKED_TOOLS = (REFERENCE, OPERATION_FLANGE, NEEDLE_MARKER, CARM_MARKER, POINTER)
