"""A lab rig file opened for real: franky on franky-sim, the NDI driver on serve-vega, a C-arm image folder."""

import json

import numpy as np
import pytest
import yaml
from protocol_check import implements

from twinsim.bench.peers import franky_sim, loopback_address, vega_peer
from twinsim.hal import Arm, CArm, Tracker
from twinsim.hal.rig import load_rig
from twinsim.rigs.open_rig import open_rig
from twinsim.tracking.markers import MARKERS_DIR
from twinsim.tracking.tools import TRACKED_TOOLS


@pytest.mark.timeout(300)
def test_lab_rig_opens_the_real_drivers_against_their_peers(tmp_path, room):
    # `room` builds the example patient into this session's cache, which the peer process reuses.
    folder = tmp_path / "export"
    folder.mkdir()
    (tmp_path / "carm.json").write_text(json.dumps({"format": "twinsim-carm-calibration/1", "views": {}}))
    with franky_sim(loopback_address(3)) as robot, vega_peer() as vega:
        rig = {
            "format": "twinsim-rig/1", "name": "loopback lab", "kind": "lab",
            "robots": {"operation": {"hostname": robot.host, "realtime": False}},
            "tracker": {"ip_address": "127.0.0.1", "port": vega.port, "timeout_s": 2.0,
                        "tools": {t: str(MARKERS_DIR / f"{t}.rom") for t in TRACKED_TOOLS}},
            "carm": {"image_folder": str(folder), "calibration": "carm.json"},
        }
        (tmp_path / "lab.yaml").write_text(yaml.safe_dump(rig))
        with open_rig(load_rig(tmp_path / "lab.yaml")) as dev:
            assert implements(dev.arm, Arm) == [] and implements(dev.tracker, Tracker) == [] and implements(dev.carm, CArm) == []
            assert dev.arm.read_joints_rad().shape == (7,)
            handles, names = dev.tracker.get_tool_descriptions()
            assert names == list(TRACKED_TOOLS)
            frames = [dev.tracker.get_frame() for _ in range(4)]
            seen = [np.isfinite(np.asarray(T)[:3]).all() for T in frames[-1][3]]
            assert sum(seen) >= 3  # the room's tools, through the real driver
            assert len(dev.registration.fiducial_names) == 5  # from the scene's planning data
