"""What a room-based bench case depends on beyond its spec, by content: the scene file and its patient's files."""

from __future__ import annotations

from pathlib import Path

from twinsim.anatomy.wheel_data import content_digest


def scene_digest(scene: str | Path | None) -> str:
    """SHA-256 over the scene file and its patient's CT, labels and label table (the default room when None)."""
    from twinsim.sim.scene_config import load_scene_config
    from twinsim.sim.world import scene_patient_files

    cfg = load_scene_config(scene)
    ct, labels, label_table, _ = scene_patient_files(cfg)
    return content_digest([Path(cfg.path), Path(ct), Path(labels), Path(label_table) if label_table else None])
