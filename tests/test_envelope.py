"""The twin's patient envelope from pointer touches: what it holds past the touched patch (no room needed)."""

from __future__ import annotations

import numpy as np

from twinsim.motion.envelope import PatientEnvelope, TableModel


def _back(half_width_mm: float, height_mm: float, along_mm: np.ndarray, min_up: float) -> np.ndarray:
    """Points of an elliptic prone back (across y, up z) whose surface normal faces up by at least ``min_up``."""
    t = np.linspace(0.0, np.pi, 181)
    y, z = half_width_mm * np.cos(t), height_mm * np.sin(t)
    n = np.column_stack([np.cos(t) / half_width_mm, np.sin(t) / height_mm])
    up = n[:, 1] / np.linalg.norm(n, axis=1) >= min_up
    return np.array([[x, yy, zz] for x in along_mm for yy, zz in zip(y[up], z[up], strict=True)])


def _table() -> TableModel:
    return TableModel(np.zeros(3), np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]), 600.0, 800.0, 2000.0)


def _inside(solids: list[PatientEnvelope], p: np.ndarray) -> np.ndarray:
    return np.min([s.signed_distance_mm(p) for s in solids], axis=0) <= 0.0


def test_the_flank_past_the_last_touch_is_in_the_twins_patient():
    """The operator touches the back where it faces up; a heavier body (30 mm more all round) carries its flank out
    below the last touch. The touched hull misses that flank; the side continuations hold it, and no more above."""
    rng = np.random.default_rng(0)
    touched = _back(180.0, 120.0, np.linspace(-150.0, 150.0, 7), 0.3)
    touches = touched[rng.choice(len(touched), 60, replace=False)]
    table = _table()
    env = PatientEnvelope.from_touches(touches, table)
    parts = env.continuations(table, 300.0, flank_mm=100.0)
    names = [p.name for p in parts]
    assert names == [f"patient envelope beyond the touches ({n})"
                     for n in ("inferior", "superior", "right flank", "left flank")], names
    # The heavier body's sides, where they face sideways (not touched), over the touched span, above the table top.
    heavy = _back(210.0, 150.0, np.linspace(-140.0, 140.0, 5), -1.0)
    flank = heavy[(heavy[:, 2] > 10.0) & (np.abs(heavy[:, 1]) > touches[:, 1].max())]
    flank = flank[flank[:, 2] < np.abs(touches[:, 2]).min()]  # below the patch's side: what the touches cannot show
    assert len(flank) > 10
    assert not _inside([env], flank).any()  # the touched hull alone: the flank is outside the twin's patient
    assert _inside([env, *parts], flank).all()
    without = env.continuations(table, 300.0)
    assert len(without) == 2 and not _inside([env, *without], flank).any()
    # Over the side, higher than the touches there: clear (an arm may pass above the flank).
    side = np.abs(touches[:, 1]) > touches[:, 1].max() - 40.0
    above = np.array([[0.0, s * (touches[:, 1].max() + 50.0), touches[side, 2].max() + 20.0] for s in (-1.0, 1.0)])
    assert not _inside([env, *parts], above).any()
    # Past the flank's width: clear.
    beyond = np.array([[0.0, s * (touches[:, 1].max() + 120.0), 20.0] for s in (-1.0, 1.0)])
    assert not _inside([env, *parts], beyond).any()


def test_the_side_continuation_follows_the_patient_not_the_world_axes():
    """The patient lies along the table whatever the table's heading: the flank is across the spine, and right is
    the patient's right (prone: posterior up, so left = up x superior)."""
    rng = np.random.default_rng(1)
    touched = _back(180.0, 120.0, np.linspace(-150.0, 150.0, 7), 0.3)
    a = np.deg2rad(30.0)
    R = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    touches = touched[rng.choice(len(touched), 60, replace=False)] @ R.T
    table = TableModel(np.zeros(3), np.array([0.0, 0.0, 1.0]), R[:, 0], 600.0, 800.0, 2000.0)
    parts = PatientEnvelope.from_touches(touches, table).continuations(table, 300.0, flank_mm=100.0)
    right, left = (p for p in parts if "flank" in p.name)
    assert "right" in right.name and "left" in left.name
    left_dir = np.cross(table.up, table.long_axis)
    assert (right.vertices_ref_mm @ left_dir).min() < -250.0 < (left.vertices_ref_mm @ left_dir).min()
    assert (left.vertices_ref_mm @ left_dir).max() > 250.0


def test_between_sparse_touches_the_envelope_follows_a_convex_back():
    """40 touches spread over a heavier patient's convex back: the hull of the touches alone runs far under the
    skin between them; interpolated between the touches, the envelope comes within a few mm of it."""
    rng = np.random.default_rng(2)
    skin = _back(210.0, 150.0, np.linspace(-150.0, 150.0, 31), 0.3)
    touches = skin[rng.choice(len(skin), 40, replace=False)]
    table = _table()
    inner = (np.abs(skin[:, 0]) < 120.0) & (np.abs(skin[:, 1]) < 0.8 * np.abs(touches[:, 1]).max())
    alone = PatientEnvelope.from_touches(touches, table, between_touches_mm=None).signed_distance_mm(skin[inner])
    between = PatientEnvelope.from_touches(touches, table).signed_distance_mm(skin[inner])
    assert alone.max() > 10.0  # the skin this far outside the touches' hull
    assert between.max() < 0.5 * alone.max() and between.max() < 6.0, (alone.max(), between.max())
    assert between.min() > -8.0  # and not far above the skin anywhere (a dock stands off the envelope)
