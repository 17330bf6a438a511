"""Reconstruction of a vertebra from two X-rays: splatting renderer, similarity, initialization, fit, metrics."""

# The reconstruction file that `twinsim plan` reads; here, so that reading it does not import the fitter (torch).
RECONSTRUCTION_FORMAT = "twinsim-reconstruction/1"
