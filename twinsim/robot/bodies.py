"""Static PyBullet bodies: boxes, compound shapes and triangle meshes (world frame, metres)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pybullet as pb

from twinsim import frames


def box_body(client: int, size_m: Sequence[float], center_m: Sequence[float], rgba: Sequence[float],
             quat_xyzw: Sequence[float] = (0, 0, 0, 1)) -> int:
    half = [s / 2 for s in size_m]
    col = pb.createCollisionShape(pb.GEOM_BOX, halfExtents=half, physicsClientId=client)
    vis = pb.createVisualShape(pb.GEOM_BOX, halfExtents=half, rgbaColor=list(rgba), physicsClientId=client)
    return pb.createMultiBody(0, col, vis, basePosition=list(center_m), baseOrientation=list(quat_xyzw),
                              physicsClientId=client)


def compound_box_body(client: int, boxes: Sequence[tuple[np.ndarray, np.ndarray, Sequence[float]]],
                      T_world_body: np.ndarray, frame_links: dict[str, np.ndarray] | None = None) -> tuple[int, dict[str, int]]:
    """One static body made of boxes ``(size_m, T_body_box, rgba)``, placed at ``T_world_body``.

    Each box is a fixed link of a shapeless base, so each keeps its own colour (PyBullet's
    shape arrays allow only one). ``frame_links`` adds shapeless links at given body-frame
    poses, so PyBullet itself reports where those frames are; their link indices are returned.
    """
    cols, viss, pos, orn = [], [], [], []
    for size, T, rgba in boxes:
        half = list(np.asarray(size, dtype=float) / 2)
        cols.append(pb.createCollisionShape(pb.GEOM_BOX, halfExtents=half, physicsClientId=client))
        viss.append(pb.createVisualShape(pb.GEOM_BOX, halfExtents=half, rgbaColor=list(rgba), physicsClientId=client))
        pos.append(T[:3, 3].tolist())
        orn.append(frames.matrix_to_quat_xyzw(T[:3, :3]).tolist())
    names = list(frame_links or {})
    for name in names:
        cols.append(-1)
        viss.append(-1)
        pos.append(frame_links[name][:3, 3].tolist())
        orn.append(frames.matrix_to_quat_xyzw(frame_links[name][:3, :3]).tolist())
    n = len(cols)
    p, q = frames.transform_to_pose(T_world_body)
    body = pb.createMultiBody(
        baseMass=0, baseCollisionShapeIndex=-1, baseVisualShapeIndex=-1, basePosition=p, baseOrientation=q,
        linkMasses=[0.0] * n, linkCollisionShapeIndices=cols, linkVisualShapeIndices=viss,
        linkPositions=pos, linkOrientations=orn,
        linkInertialFramePositions=[[0, 0, 0]] * n, linkInertialFrameOrientations=[[0, 0, 0, 1]] * n,
        linkParentIndices=[0] * n, linkJointTypes=[pb.JOINT_FIXED] * n, linkJointAxis=[[0, 0, 1]] * n,
        physicsClientId=client,
    )
    return body, {name: len(boxes) + i for i, name in enumerate(names)}


def mesh_body(client: int, vertices_world_m: np.ndarray, faces: np.ndarray, rgba: Sequence[float]) -> int:
    """Static concave triangle-mesh body from world-frame vertices in metres."""
    verts = np.asarray(vertices_world_m, dtype=np.float64).tolist()
    idx = np.asarray(faces, dtype=np.int32).reshape(-1).tolist()
    col = pb.createCollisionShape(pb.GEOM_MESH, vertices=verts, indices=idx,
                                  flags=pb.GEOM_FORCE_CONCAVE_TRIMESH, physicsClientId=client)
    vis = pb.createVisualShape(pb.GEOM_MESH, vertices=verts, indices=idx, rgbaColor=list(rgba),
                               physicsClientId=client)
    return pb.createMultiBody(0, col, vis, physicsClientId=client)
