"""``twinsim patient``: check a CT and its label map, mesh the vertebrae and skin, report volumes."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from twinsim.commands.common import add_patient_arguments, comma_list, patient_files


def cmd_patient(args: argparse.Namespace) -> int:
    from twinsim.anatomy.patient import build_patient
    from twinsim.report import table, write_json

    ct, labels, lt, name = patient_files(args, "patient")
    levels = [lv.upper() for lv in comma_list(args.levels, "--levels", "patient")]
    patient = build_patient(ct, labels, lt, name=name, require_levels=levels or None)
    rows = []
    for lvl in patient.levels:
        m = patient.vertebrae[lvl]
        rows.append([lvl, f"{m.volume_mm3 / 1000:.1f}", m.n_vertices, "yes" if m.is_watertight else "NO",
                     np.round(m.centroid_mm, 1).tolist()])
    print(f"patient {patient.name} (key {patient.content_key[:12]})")
    print(table(["vertebra", "volume cm^3", "vertices", "watertight", "centroid ct RAS (mm)"], rows))
    print(f"skin: {patient.skin.n_vertices} vertices, {patient.skin.volume_mm3 / 1e6:.1f} L enclosed")
    for lvl, edges in patient.cut_levels.items():
        print(f"{lvl}: cut by the field of view ({', '.join(edges)}), not meshed")
    if args.export:
        out = Path(args.export)
        out.mkdir(parents=True, exist_ok=True)
        for lvl, m in patient.vertebrae.items():
            m.write(out / f"{lvl}.ply")
        patient.skin.write(out / "skin.ply")
        write_json(out / "patient.json", {"name": patient.name, "frame": "ct (RAS, mm)", "levels": {
            lvl: {"volume_cm3": patient.vertebrae[lvl].volume_mm3 / 1000,
                  "centroid_mm": patient.vertebrae[lvl].centroid_mm.tolist()} for lvl in patient.levels},
            "cut_levels": patient.cut_levels})
        print(f"wrote meshes (PLY, ct frame, mm) to {out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    pa = sub.add_parser("patient", help="load a CT + label map, mesh the vertebrae and skin, report volumes",
                        description="Checks a CT (Hounsfield units) and its TotalSegmentator-style label map, then builds "
                                    "one watertight mesh per complete vertebra and the skin (cached by content).")
    add_patient_arguments(pa)
    pa.add_argument("--levels", help="vertebrae that must be present and complete, comma-separated (e.g. L1,T12)")
    pa.add_argument("--export", help="write PLY meshes and patient.json to this folder")
    pa.set_defaults(func=cmd_patient)
