"""The shape model as a differentiable PyTorch function of pose and shape."""

from __future__ import annotations

import torch

from twinsim.shape.model import ShapeModel, ShapeModelError


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """(B, 3) axis-angle -> (B, 3, 3), differentiable everywhere (matrix exponential of the skew)."""
    zero = torch.zeros_like(rotvec[:, 0])
    x, y, z = rotvec.unbind(-1)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(-1, 3, 3)
    return torch.linalg.matrix_exp(skew)


class DifferentiableInstance(torch.nn.Module):
    """vertices(pose, shape) in a batch, with gradients to both.

    ``forward(coeffs_sd (B, K), rotvec (B, 3), translation_mm (B, 3)) -> (B, V, 3)``:
    ``R(rotvec) @ (mean + sum_k b_k * std_k * mode_k) + t``, rotating about the model origin.
    """

    def __init__(self, model: ShapeModel, n_modes: int | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        k = model.n_modes if n_modes is None else n_modes
        if not 0 <= k <= model.n_modes:
            raise ShapeModelError(f"model {model.name} has {model.n_modes} modes; asked for {k}")
        self.n_modes = k
        self.register_buffer("mean", torch.as_tensor(model.mean_mm, dtype=dtype))
        self.register_buffer("basis", torch.as_tensor(model.modes[:k] * model.std_mm[:k, None, None], dtype=dtype))

    def forward(self, coeffs_sd: torch.Tensor, rotvec: torch.Tensor, translation_mm: torch.Tensor) -> torch.Tensor:
        shape = self.mean[None] + torch.einsum("bk,kvd->bvd", coeffs_sd, self.basis)
        R = axis_angle_to_matrix(rotvec)
        return torch.einsum("bij,bvj->bvi", R, shape) + translation_mm[:, None, :]
