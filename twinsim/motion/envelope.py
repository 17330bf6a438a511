"""The patient envelope and the table, from what the sensors give: no CT skin.

The table: the floor lies below the robot's calibrated base by its cart's datasheet height,
the top the table's datasheet height above it; centred under the patient, long axis along the
spine as the reconstruction has it; a solid from the floor to the top (the twin never plans
under it). The envelope: points the tracked pointer touched on the patient's back, joined to
their feet on the table top, make a convex solid. Over a prone back a convex hull bridges the
groove along the spine, so it errs on the side of the patient there; over the convex parts of the
back it runs under the skin between the touches, so the twin grows it by a padding for collisions.
Past the touched patch the body goes on: a solid of the patch's end continues it along the table, and one of
its side continues it across, towards the flank the operator did not touch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import RBFInterpolator
from scipy.spatial import ConvexHull, Delaunay, QhullError

from twinsim import frames
from twinsim.errors import TwinsimError

FLOOR_SIZE_MM = 8000.0


class SurveyError(TwinsimError, ValueError):
    """Too few or degenerate pointer touches to model the table or the patient."""


@dataclass
class TableModel:
    """The table top in ``ref`` (mm): a point on it, its up normal, its long axis, its width; the datasheet height."""

    centre_mm: np.ndarray
    up: np.ndarray
    long_axis: np.ndarray
    width_mm: float
    top_height_mm: float  # floor to the top surface
    length_mm: float

    @classmethod
    def under_patient(cls, skin_ref_mm: np.ndarray, floor_point_ref_mm: np.ndarray, up: np.ndarray, superior: np.ndarray,
                      top_height_mm: float, width_mm: float, length_mm: float) -> TableModel:
        """The table top ``top_height_mm`` above the floor, centred under the touched skin, long axis along the spine."""
        P = np.asarray(skin_ref_mm, dtype=np.float64).reshape(-1, 3)
        up = np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
        along = np.asarray(superior, dtype=np.float64) - (np.asarray(superior) @ up) * up
        if np.linalg.norm(along) < 0.5:
            raise SurveyError(f"the spine's axis is {frames.angle_between_deg(superior, up):.0f} deg from vertical: the patient "
                              "does not lie on the table")
        along /= np.linalg.norm(along)
        c = P.mean(0) if len(P) else np.asarray(floor_point_ref_mm, dtype=np.float64)
        top = np.asarray(floor_point_ref_mm, dtype=np.float64) + up * top_height_mm
        centre = c - ((c - top) @ up) * up
        return cls(centre, up, along, float(width_mm), float(top_height_mm), float(length_mm))

    def height_above_floor_mm(self, p_ref_mm: np.ndarray) -> float:
        return float((np.asarray(p_ref_mm) - self.centre_mm) @ self.up + self.top_height_mm)

    def boxes_m(self) -> list[tuple[list[float], np.ndarray, str]]:
        """``(size, T_ref_box, name)`` in metres: the table as a solid to the floor, and the floor."""
        R = np.column_stack([self.long_axis, np.cross(self.up, self.long_axis), self.up])
        table_c = self.centre_mm - self.up * self.top_height_mm / 2
        floor_c = self.centre_mm - self.up * (self.top_height_mm + 10.0)
        return [([self.length_mm * 1e-3, self.width_mm * 1e-3, self.top_height_mm * 1e-3],
                 frames.make_transform(R, table_c * 1e-3), "table"),
                ([FLOOR_SIZE_MM * 1e-3, FLOOR_SIZE_MM * 1e-3, 0.02], frames.make_transform(R, floor_c * 1e-3), "floor")]


@dataclass
class PatientEnvelope:
    vertices_ref_mm: np.ndarray
    faces: np.ndarray
    equations: np.ndarray  # (F, 4) outward unit normals and offsets: inside where n.x + d <= 0
    touches: int
    name: str = "patient envelope"

    @classmethod
    def from_touches(cls, skin_ref_mm: np.ndarray, table: TableModel, between_touches_mm: float | None = 20.0) -> PatientEnvelope:
        """The convex solid of the touches and their feet on the table top.

        ``between_touches_mm``: where the back lies between the touches. The hull's faces run straight from touch
        to touch, under a convex back (by 30 mm over a heavier patient's side between touches 10 cm apart), so
        the back is also interpolated between them: a smooth height over the table (a thin-plate spline through
        the touches), sampled on this grid inside the touched patch, joins the hull. None: the touches alone.
        """
        P = np.asarray(skin_ref_mm, dtype=np.float64)
        if P.ndim != 2 or P.shape[1] != 3 or len(P) < 8 or not np.isfinite(P).all():
            raise SurveyError(f"the patient envelope needs at least 8 finite touches on the skin, got {P.shape}")
        height = (P - table.centre_mm) @ table.up
        if (height <= 0).any():
            raise SurveyError(f"{int((height <= 0).sum())} skin touches lie at or below the table top")
        tops = P if between_touches_mm is None else np.vstack([P, _between(P, table, between_touches_mm)])
        feet = tops - np.outer((tops - table.centre_mm) @ table.up, table.up)
        try:
            hull = ConvexHull(np.vstack([tops, feet]))
        except QhullError as exc:
            raise SurveyError(f"the skin touches span no volume: {str(exc).splitlines()[0]}") from None
        return cls(hull.points[hull.vertices], _reindex(hull), hull.equations.copy(), len(P))

    def padded(self, padding_mm: float) -> PatientEnvelope:
        """The envelope grown by about ``padding_mm`` all round: over a convex back the hull of the touches runs under
        the skin between them (by several mm where they lie far apart), so the twin's patient is grown for collisions."""
        if padding_mm <= 0:
            return self
        dirs = np.array([d for d in itertools.product((-1.0, 0.0, 1.0), repeat=3) if any(d)])
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)  # 26 directions: the ball inscribed at >= 0.85 of the padding
        pts = (self.vertices_ref_mm[:, None, :] + padding_mm * dirs[None]).reshape(-1, 3)
        hull = ConvexHull(pts)
        return PatientEnvelope(hull.points[hull.vertices], _reindex(hull), hull.equations.copy(), self.touches, self.name)

    def continuations(self, table: TableModel, length_mm: float, flank_mm: float = 0.0,
                      end_band_mm: float = 40.0) -> list[PatientEnvelope]:
        """The body beyond the touched patch: a solid past each end along the spine, ``length_mm`` long, and one past
        each side across the table, ``flank_mm`` wide.

        The pointer traces a patch of the back around the target; the patient goes on past it (and a CT ends
        where the scan stopped). Each continuation carries the patch's last ``end_band_mm`` on, its
        cross-section as the touches there have it: at the ends, the back's height and width; at the sides, the
        height of the patch's edge, down to the table. The operator touches the back, not the flanks, and a
        heavy body carries its flanks out past the last touch that faces up, below that edge.
        """
        across = np.cross(table.up, table.long_axis)  # the patient's left: posterior (up) x superior
        out = []
        for axis, length, names in ((table.long_axis, length_mm, ("inferior", "superior")),
                                    (across, flank_mm, ("right flank", "left flank"))):
            if length <= 0:
                continue
            P = self.vertices_ref_mm
            along = (P - table.centre_mm) @ axis
            for sign, end, name in ((-1.0, along.min(), names[0]), (1.0, along.max(), names[1])):
                band = np.abs(along - end) <= end_band_mm
                if band.sum() < 4:
                    band = np.ones(len(P), dtype=bool)  # too few touches at that end: the whole patch's silhouette
                near = P[band] - np.outer(along[band] - end, axis)  # onto the end's plane
                far = near + axis * sign * length
                try:
                    hull = ConvexHull(np.vstack([near, far]))
                except QhullError:
                    continue  # the end's touches span no area: nothing to carry on
                out.append(PatientEnvelope(hull.points[hull.vertices], _reindex(hull), hull.equations.copy(), 0,
                                           f"patient envelope beyond the touches ({name})"))
        return out

    def signed_distance_mm(self, p_ref_mm: np.ndarray) -> np.ndarray:
        """A lower bound of the distance outside (> 0) and the depth inside (< 0), per point."""
        p = np.atleast_2d(p_ref_mm)
        return (p @ self.equations[:, :3].T + self.equations[:, 3]).max(axis=1)

    def exit_along_mm(self, inside_mm: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Where a ray from a point inside the envelope leaves it."""
        p, u = np.asarray(inside_mm, dtype=np.float64), np.asarray(direction, dtype=np.float64)
        u = u / np.linalg.norm(u)
        n, d = self.equations[:, :3], self.equations[:, 3]
        if (n @ p + d).max() > 0:
            raise SurveyError(f"the point {np.round(p, 1).tolist()} mm is outside the patient envelope")
        rate = n @ u
        t = -(n @ p + d)[rate > 1e-9] / rate[rate > 1e-9]
        return p + u * float(t.min())


def _between(P: np.ndarray, table: TableModel, step_mm: float) -> np.ndarray:
    """The back between the touches: a smoothing thin-plate spline of the height over the table through them,
    sampled every ``step_mm`` inside the touches' footprint (never past it: no extrapolation)."""
    across = np.cross(table.up, table.long_axis)
    rel = P - table.centre_mm
    xy, h = np.column_stack([rel @ table.long_axis, rel @ across]), rel @ table.up
    try:
        foot = Delaunay(xy)
    except QhullError:
        return np.empty((0, 3))  # the touches lie on a line: nothing between them
    lo, hi = xy.min(0), xy.max(0)
    g = np.stack(np.meshgrid(*(np.arange(a, b + step_mm, step_mm) for a, b in zip(lo, hi, strict=True))), -1).reshape(-1, 2)
    g = g[foot.find_simplex(g) >= 0]
    if not len(g):
        return np.empty((0, 3))
    # The pointer's own error (about 0.5 mm) is smoothed over, not fitted: a spline through noise ripples.
    z = RBFInterpolator(xy, h, kernel="thin_plate_spline", smoothing=1.0)(g)
    z = np.clip(z, 1.0, None)
    return table.centre_mm + np.outer(g[:, 0], table.long_axis) + np.outer(g[:, 1], across) + np.outer(z, table.up)


def _reindex(hull: ConvexHull) -> np.ndarray:
    remap = {int(v): i for i, v in enumerate(hull.vertices)}
    return np.array([[remap[int(v)] for v in f] for f in hull.simplices], dtype=np.int64)
