"""The truth wall by types: the procedure on the simulated rig holds no room, CT, label map, driver or true pose.

The walk follows every attribute, slot, container element, closure cell, default and bound method's
``__self__`` from the rehearsal as the wiring builds it. It does not follow module globals: reaching a
module's globals from the twin's side means importing it, which the import contracts forbid.
"""

import dataclasses
import types

import numpy as np
import pytest

pytestmark = pytest.mark.slow

# Modules whose objects are the simulation's truth or its drivers.
TRUTH_MODULES = ("twinsim.sim", "twinsim.hal.sim", "twinsim.hal.real", "twinsim.evaluation", "twinsim.bench",
                 "twinsim.scenario", "twinsim.anatomy.ct", "twinsim.anatomy.patient", "twinsim.anatomy.labels",
                 "twinsim.tracking.vega_sim", "nibabel")
TRUTH_NAMES = ("true_", "truth", "vega", "ct_volume", "label_map")  # and an attribute called "room"
LEAVES = (str, bytes, int, float, complex, bool, type(None), np.ndarray, np.generic, type, types.ModuleType, range)


def find_truth(root, name="rehearsal"):
    """Paths from ``root`` to anything of the simulation's truth, by the object's type or an attribute's name."""
    found, seen, stack = [], set(), [(root, name)]
    while stack:
        obj, path = stack.pop()
        module = type(obj).__module__ or ""
        if module.startswith(TRUTH_MODULES):  # every path to it, not only the first
            found.append(f"{path}: {type(obj).__module__}.{type(obj).__name__}")
            continue
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, LEAVES):
            continue
        children = []
        if isinstance(obj, dict):
            children = [(v, f"{path}[{k!r}]") for k, v in obj.items()] + [(k, f"{path}.key") for k in obj]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            children = [(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        elif isinstance(obj, types.FunctionType):
            cells = [c.cell_contents for c in (obj.__closure__ or ()) if c.cell_contents is not None]
            children = [(c, f"{path}.<closure>") for c in cells]
            children += [(d, f"{path}.<default>") for d in (obj.__defaults__ or ())]
            children += [(d, f"{path}.<kwdefault>") for d in (obj.__kwdefaults__ or {}).values()]
        elif isinstance(obj, types.MethodType):
            children = [(obj.__self__, f"{path}.__self__"), (obj.__func__, f"{path}.__func__")]
        else:
            attrs = dict(vars(obj)) if hasattr(obj, "__dict__") else {}
            for klass in type(obj).__mro__:
                for slot in getattr(klass, "__slots__", ()):
                    if hasattr(obj, slot):
                        attrs[slot] = getattr(obj, slot)
            for k, v in attrs.items():
                if (k.lstrip("_") == "room" or k.lstrip("_").startswith(TRUTH_NAMES)) and v is not None:
                    found.append(f"{path}.{k}: named like the truth")
                children.append((v, f"{path}.{k}"))
        stack.extend(children)
    return found


@pytest.fixture(scope="module")
def sim_rehearsal(example_patient_model, tmp_path_factory):
    from twinsim.evaluation.placement_truth import SimVerifier
    from twinsim.hal.rig import load_rig
    from twinsim.rigs.open_rig import new_rehearsal, open_rig
    from twinsim.twin.calibration_set import load_calibration

    rig = load_rig(None)
    with open_rig(rig, progress=False) as dev:
        verifier = SimVerifier(dev, dev.target_level)
        r = new_rehearsal(dev, tmp_path_factory.mktemp("wall"), None, load_calibration(rig.calibration), verifier,
                          plan_source=lambda reh: verifier.room)  # a baseline's plan source closes over the truth
        yield r, dev


def test_the_procedure_holds_no_truth_and_a_planted_one_is_found(sim_rehearsal):
    r, dev = sim_rehearsal
    assert find_truth(r) == []
    # Every device the procedure holds is a port of its interface, not the driver.
    from twinsim.hal.ports import Port

    for name in ("arm", "tracker", "carm", "operator", "navigation"):
        assert isinstance(getattr(r.dev, name), Port), name
    assert isinstance(r.verify, Port) and isinstance(r.plan_source, Port)
    assert not hasattr(r.dev.carm, "true_geometry") and not hasattr(r.dev.tracker, "vega")
    assert r.dev.tracker.get_tool_descriptions()[1]  # and the port still works

    # Planted: the room in a nested helper, a driver, and the room behind a closure are each found.
    r.helper = types.SimpleNamespace(parts=[{"x": dev.room}])
    r.spare_arm = dev.arm
    r.callback = (lambda room: (lambda: room))(dev.room)
    planted = find_truth(r)
    r.__dict__.pop("helper"), r.__dict__.pop("spare_arm"), r.__dict__.pop("callback")
    assert any("helper.parts[0]['x']" in p for p in planted), planted
    assert any("spare_arm" in p and "SimArm" in p for p in planted), planted
    assert any("callback.<closure>" in p for p in planted), planted
    # A truth attribute planted on the devices' own data is found by its name too.
    planted = find_truth(dataclasses.replace(r.dev, tolerances=types.SimpleNamespace(true_pose=np.eye(4))), "devices")
    assert planted == ["devices.tolerances.true_pose: named like the truth"]


def test_the_simulated_cameras_images_carry_only_allowed_metadata(sim_rehearsal):
    from twinsim.hal.interfaces import CArmView

    r, dev = sim_rehearsal
    r.dev.carm.move_to(CArmView("AP", 0.0, 0.0))
    acq = r.dev.carm.acquire()
    assert set(acq.meta) == {"source", "detector", "exposure"}
    assert acq.geometry.frame == "carm_source"  # the datasheet's geometry in its own frame, not the room's
    assert dev.carm.true_geometry(acq).frame == "ct"  # evaluation code still finds its truth by the exposure id
    r.dev.carm.park()
