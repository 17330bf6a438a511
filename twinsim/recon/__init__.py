"""Reconstruction of a vertebra from two X-rays: splatting renderer, similarity, initialization, fit, metrics."""
