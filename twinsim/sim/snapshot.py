"""PNG views of the room from PyBullet's software (tiny) renderer: works headless, no GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pybullet as pb
from PIL import Image, ImageDraw

from twinsim import frames
from twinsim.report import atomic_output
from twinsim.sim.scene_config import ViewConfig
from twinsim.sim.world import OperatingRoom

FOV_DEG = 45.0


def render_view(room: OperatingRoom, view: ViewConfig, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    vm = pb.computeViewMatrixFromYawPitchRoll(view.target_m.tolist(), view.distance_m, view.yaw_deg, view.pitch_deg,
                                              0.0, 2, physicsClientId=room.client)
    pm = pb.computeProjectionMatrixFOV(FOV_DEG, w / h, 0.05, 20.0, physicsClientId=room.client)
    img = pb.getCameraImage(w, h, vm, pm, renderer=pb.ER_TINY_RENDERER, shadow=1,
                            lightDirection=[0.4, -0.6, 1.0], physicsClientId=room.client)
    return np.reshape(np.asarray(img[2], dtype=np.uint8), (h, w, 4))[:, :, :3]


def render_anatomy(room: OperatingRoom, view: ViewConfig, size: tuple[int, int]) -> np.ndarray:
    """The same view with the skin moved out of the way, so the vertebrae show."""
    far = [0.0, 0.0, -100.0]
    pb.resetBasePositionAndOrientation(room.skin_body, far, [0, 0, 0, 1], physicsClientId=room.client)
    try:
        return render_view(room, view, size)
    finally:
        p, q = frames.transform_to_pose(room.patient_motion())
        pb.resetBasePositionAndOrientation(room.skin_body, p, q, physicsClientId=room.client)


def write_snapshot(room: OperatingRoom, path: str | Path, title: str = "") -> Path:
    """Tile every configured view (plus an anatomy close-up) into one PNG, written atomically."""
    cfg = room.config
    size = cfg.image_size
    panels: list[tuple[str, np.ndarray]] = [(v.name, render_view(room, v, size)) for v in cfg.views]
    # Frame the meshed spine from the patient's right, a little above the table.
    spine = np.array([room.patient.vertebra(lvl).centroid_mm for lvl in room.patient.levels])
    centre = frames.transform_points(room.T_world_ct, spine.mean(axis=0) * 1e-3)
    extent = float(np.ptp(spine, axis=0).max()) * 1e-3
    close = ViewConfig("anatomy (skin hidden), target in red", centre, max(0.4, 1.6 * extent), 0.0, -20.0)
    panels.append((close.name, render_anatomy(room, close, size)))
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    w, h = size
    header = 28 if title else 0
    sheet = Image.new("RGB", (cols * w, rows * h + header), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((8, 8), title, fill="black")
    for i, (name, img) in enumerate(panels):
        x, y = (i % cols) * w, header + (i // cols) * h
        sheet.paste(Image.fromarray(img), (x, y))
        draw.rectangle([x + 4, y + 4, x + 8 + 7 * len(name), y + 20], fill="white")
        draw.text((x + 7, y + 6), name, fill="black")
    with atomic_output(path) as tmp:
        sheet.save(tmp, format="PNG")
    return Path(path)
