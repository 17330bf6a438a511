"""Binary masks to watertight surface meshes (marching cubes, light smoothing, decimation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open3d as o3d
from scipy import ndimage
from skimage import measure

from twinsim import frames
from twinsim.errors import TwinsimError


class MeshingError(TwinsimError, RuntimeError):
    """A mask could not be turned into a closed surface."""


@dataclass
class SurfaceMesh:
    """A triangle surface; vertices in millimetres in the frame named by ``frame``."""

    vertices_mm: np.ndarray  # (N, 3) float64
    faces: np.ndarray  # (M, 3) int32, counter-clockwise seen from outside
    frame: str = "ct"

    @property
    def n_vertices(self) -> int:
        return int(len(self.vertices_mm))

    def to_open3d(self) -> o3d.geometry.TriangleMesh:
        return o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(self.vertices_mm),
            o3d.utility.Vector3iVector(self.faces.astype(np.int32)),
        )

    def raycasting_scene(self) -> o3d.t.geometry.RaycastingScene:
        return raycasting_scene(self.vertices_mm, self.faces)

    @property
    def is_watertight(self) -> bool:
        """Closed, oriented and free of self-intersections."""
        return _is_closed_surface(self.to_open3d())

    @property
    def is_closed(self) -> bool:
        """Closed and oriented (self-intersections not looked for: the skin's test)."""
        return _is_closed_surface(self.to_open3d(), self_intersection_check=False)

    @property
    def volume_mm3(self) -> float:
        """Enclosed volume from the divergence theorem (valid for a closed, outward-oriented mesh)."""
        v = self.vertices_mm[self.faces]
        return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0)

    @property
    def centroid_mm(self) -> np.ndarray:
        """Volume centroid (not the vertex mean, which depends on sampling density)."""
        v = self.vertices_mm[self.faces]
        vol = np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])) / 6.0
        c = v.sum(axis=1) / 4.0
        return (vol[:, None] * c).sum(axis=0) / vol.sum()

    def transformed(self, T_to_from: np.ndarray, frame: str, scale: float = 1.0) -> SurfaceMesh:
        """This mesh in another frame; ``scale`` converts the unit first (1e-3 for mm -> m)."""
        return SurfaceMesh(frames.transform_points(T_to_from, self.vertices_mm * scale), self.faces.copy(), frame)

    def save(self, path: Path) -> None:
        np.savez_compressed(path, vertices_mm=self.vertices_mm, faces=self.faces, frame=self.frame)

    @classmethod
    def load(cls, path: Path) -> SurfaceMesh:
        with np.load(path) as d:
            return cls(d["vertices_mm"], d["faces"].astype(np.int32), str(d["frame"]))

    def write(self, path: Path) -> None:
        """Export to PLY/STL/OBJ (by suffix) for other tools."""
        m = self.to_open3d()
        m.compute_vertex_normals()
        if not o3d.io.write_triangle_mesh(str(path), m):
            raise OSError(f"could not write mesh to {path}")


def raycasting_scene(vertices: np.ndarray, faces: np.ndarray) -> o3d.t.geometry.RaycastingScene:
    """Open3D scene for distance, occupancy and ray queries against one triangle surface."""
    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(np.asarray(faces, dtype=np.int32)))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(m))
    return scene


def mask_bounds(mask: np.ndarray, pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index bounds ``[lo, hi)`` of a non-empty 3D mask, grown by ``pad`` and kept inside the array."""
    occupied = [np.flatnonzero(mask.any(axis=tuple(j for j in range(3) if j != i))) for i in range(3)]
    lo = np.array([max(o[0] - pad, 0) for o in occupied])
    hi = np.array([min(o[-1] + 1 + pad, n) for o, n in zip(occupied, mask.shape, strict=True)])
    return lo, hi


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def mask_to_mesh(
    mask: np.ndarray,
    affine_mm: np.ndarray,
    target_vertices: int,
    smooth_sigma_mm: float = 0.7,
    taubin_iterations: int = 10,
    fill_holes: bool = True,
    self_intersection_check: bool = True,
) -> SurfaceMesh:
    """Closed surface of the largest connected component of ``mask``, in the affine's frame (mm).

    The mask is blurred slightly before marching cubes so the staircase of anisotropic voxels
    does not dominate the surface, then decimated to about ``target_vertices`` and Taubin
    smoothed (which, unlike Laplacian smoothing, does not shrink the volume).
    """
    if mask.ndim != 3:
        raise MeshingError(f"mask must be 3D, got {mask.ndim}D")
    if not mask.any():
        raise MeshingError("mask is empty")
    try:
        return _mask_to_mesh(mask, affine_mm, target_vertices, smooth_sigma_mm, taubin_iterations, fill_holes,
                             self_intersection_check=self_intersection_check)
    except MeshingError:
        spacing = np.linalg.norm(affine_mm[:3, :3], axis=0)
        if spacing.max() < 1.5 * spacing.min():
            raise
    # Thick slices (3 mm and more) leave steps that decimation folds into a non-manifold surface:
    # mesh again on an isotropic grid at the finest spacing, the mask interpolated between slices.
    return _mask_to_mesh(mask, affine_mm, target_vertices, smooth_sigma_mm, taubin_iterations, fill_holes, isotropic=True,
                         self_intersection_check=self_intersection_check)


def _mask_to_mesh(mask: np.ndarray, affine_mm: np.ndarray, target_vertices: int, smooth_sigma_mm: float,
                  taubin_iterations: int, fill_holes: bool, isotropic: bool = False,
                  self_intersection_check: bool = True) -> SurfaceMesh:
    # Work on the bounding box: component labelling and hole filling on a whole CT cost seconds.
    pad = 3
    lo, hi = mask_bounds(mask)
    crop = largest_component(mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
    if fill_holes:
        crop = ndimage.binary_fill_holes(crop)
    crop = np.pad(crop, pad).astype(np.float32)
    spacing = np.linalg.norm(affine_mm[:3, :3], axis=0)
    if smooth_sigma_mm > 0:
        crop = ndimage.gaussian_filter(crop, sigma=smooth_sigma_mm / spacing)
    scale = np.ones(3)
    if isotropic:
        scale = spacing / spacing.min()  # new voxels per old voxel along each axis
        crop = ndimage.gaussian_filter(crop, sigma=np.maximum(scale - 1.0, 0.0) / 2.0)
        shape_in = np.array(crop.shape)
        crop = ndimage.zoom(crop, scale, order=1)
        scale = (np.array(crop.shape) - 1) / (shape_in - 1)  # zoom maps first and last voxel centres onto each other
    verts, faces, _, _ = measure.marching_cubes(crop, level=0.5)
    verts_ijk = verts / scale + lo - pad
    verts_mm = frames.transform_points(affine_mm, verts_ijk)

    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(verts_mm), o3d.utility.Vector3iVector(faces.astype(np.int32)))
    m.remove_duplicated_vertices()
    m.remove_degenerate_triangles()
    if len(m.vertices) > target_vertices:
        m = m.simplify_quadric_decimation(target_number_of_triangles=max(4, 2 * target_vertices - 4))
    # Taubin smoothing can fold thin processes through each other; back off until it does not.
    iterations = taubin_iterations
    while True:
        smoothed = m.filter_smooth_taubin(number_of_iterations=iterations) if iterations > 0 else m
        if _is_closed_surface(smoothed, self_intersection_check):
            break
        if iterations == 0:
            raise MeshingError(
                f"surface of the mask is not watertight after decimation to {target_vertices} vertices; "
                "try a larger target vertex count"
            )
        iterations //= 2
    out = SurfaceMesh(np.asarray(smoothed.vertices).copy(), np.asarray(smoothed.triangles).astype(np.int32).copy())
    if out.volume_mm3 < 0:
        out.faces = out.faces[:, ::-1].copy()
    return out


def _is_closed_surface(m: o3d.geometry.TriangleMesh, self_intersection_check: bool = True) -> bool:
    """Closed 2-manifold, consistently oriented and (unless told otherwise) free of self-intersections."""
    if self_intersection_check:
        return bool(m.is_watertight() and m.is_orientable())
    return bool(m.is_edge_manifold(allow_boundary_edges=False) and m.is_vertex_manifold() and m.is_orientable())
