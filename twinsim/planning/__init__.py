"""Transpedicular planning on a reconstructed vertebra: transfer, refinement, safety check, plan file.

Reads only what the system knows: a reconstruction (pose and shape of the model in the X-rays'
frame) and the shape model. Never the CT, its labels or anything of the simulated room; the
import contracts in ``pyproject.toml`` hold that wall.
"""
