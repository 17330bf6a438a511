"""``twinsim scene``: build the operating room on the patient, report it, write ``scene.png``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _fmt_clearance(d_m: float, query_m: float) -> str:
    if d_m == np.inf:
        return f"free (> {query_m * 1000:.0f} mm)"
    if d_m <= 0:
        return f"COLLIDING (penetration {-d_m * 1000:.1f} mm)"
    return f"free ({d_m * 1000:.1f} mm)"


def cmd_scene(args: argparse.Namespace) -> int:
    from twinsim.anatomy.labels import level_sort_key
    from twinsim.report import table
    from twinsim.sim.snapshot import write_snapshot
    from twinsim.sim.world import CLEARANCE_QUERY_M, build_operating_room

    room = build_operating_room(args.scene, gui=args.gui, progress=None)
    with room:
        cfg, patient = room.config, room.patient
        print(f"scene    {cfg.name} ({cfg.path.name})")
        print(f"patient  {patient.name}; target {cfg.patient.target_level}; {cfg.patient.position}, head towards {cfg.patient.head_toward}"
              f"{' (meshes from cache)' if patient.from_cache else ''}")
        rows = [[lvl, f"{m.volume_mm3 / 1000:.1f}", m.n_vertices, "yes" if lvl == cfg.patient.target_level else ""]
                for lvl, m in ((lvl, patient.vertebrae[lvl]) for lvl in patient.levels)]
        print(table(["vertebra", "volume cm^3", "vertices", "target"], rows))
        if patient.cut_levels:
            cut = ", ".join(f"{lvl} ({'/'.join(patient.cut_levels[lvl])})" for lvl in sorted(patient.cut_levels, key=level_sort_key))
            print(f"cut by the field of view (not meshed): {cut}")
        g = room.frame_graph()
        rows = []
        for name, tip in (("operation", "tool"), ("navigation", "cam")):
            q = room.joint_positions(name)
            p = g.get("world", tip)[:3, 3]
            rows.append([name, room.robots[name].config.tool, np.round(q, 3).tolist(), np.round(p, 3).tolist()])
        print(table(["robot", "tool", "joints (rad)", "tool frame in world (m)"], rows))
        carm = cfg.carm
        print(f"C-arm    LAO {carm.lao_deg:+.1f} deg, cranial {carm.cranial_deg:+.1f} deg, SDD {carm.geometry.sdd_mm:.0f} mm, "
              f"isocenter {np.round(room.T_world_carm[:3, 3], 3).tolist()} m")
        if cfg.markers:
            from twinsim.sim.markers_in_room import clamp_level, room_tracker

            for name, mount in cfg.markers.items():
                if mount.get("attach") == "patient":
                    level = clamp_level(patient, cfg.patient.target_level, mount.get("level"), f"markers.{name}.level")
                    how = "as the scene names it" if mount.get("level") else "the nearest complete vertebra to the target"
                    print(f"{name}: clamped on the spinous process of {level} ({how})")

            vega = room_tracker(room, {"latency s": 0.0})
            f = vega.get_frame()
            rows = []
            for T, q, tool in zip(f[3], f[4], vega.tools, strict=True):
                vis = int(vega.last_spheres[tool.port_handle][2].sum())
                ok = bool(np.isfinite(T[:3]).all())
                rows.append([tool.port_handle, tool.marker.name, f"{vis}/4", f"{np.linalg.norm(T[:3, 3]):.0f}" if ok else "-",
                             f"{q:.3f}" if ok else "MISSING"])
            print(table(["port", "tool", "spheres seen", "distance mm", "fit RMS mm"], rows))
        report = room.clearance_report()
        print(table(["body", "body", "clearance"], [[c.a, c.b, _fmt_clearance(c.distance_m, CLEARANCE_QUERY_M)] for c in report]))
        title = f"twinsim {cfg.name}: {patient.name}, target {cfg.patient.target_level}"
        path = write_snapshot(room, Path(args.out) / "scene.png", title)
        print(f"wrote {path}")
        if args.gui:
            input("GUI open; press Enter to close ")
        return 1 if any(c.colliding for c in report) else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("scene", help="build the operating room on the patient, report it, write scene.png",
                       description="Build the scene (patient meshes cached by content), print a summary of the patient, "
                                   "robots, C-arm and collision clearances, and write a PNG snapshot. Exits 1 if any "
                                   "robot touches the patient, table or C-arm.")
    r.add_argument("--scene", help="scene YAML (default: the default room, scenarios/rooms/default.yaml)")
    r.add_argument("-o", "--out", default="out", help="output folder for scene.png (default: out)")
    r.add_argument("--gui", action="store_true", help="open the PyBullet GUI (needs a display)")
    r.set_defaults(func=cmd_scene)
