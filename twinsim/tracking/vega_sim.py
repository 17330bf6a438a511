"""A simulated NDI Polaris Vega whose ``get_frame()`` is scikit-surgerynditracker's.

It subclasses the same base class as ``sksurgerynditracker.NDITracker`` (sksurgerycore's
``SKSBaseTracker``) and feeds it the same way, so buffering, smoothing, 4x4 versus quaternion
output, NaN for a missing tool and the return structure are identical by construction, and
the real tracker can replace it unchanged.

What is simulated (numbers in ../shared/DESIGN.md): per-sphere Gaussian noise (white, new
every frame; 0.12 mm 3D RMS by default); optionally a systematic, position-dependent error (a
smooth random field over the camera's frame, the same every frame at the same place, as a
real camera's residual calibration error is); markers whose spheres sit off their
definition (manufacturing tolerance, on the tool); the pyramid measurement volume; line of sight per sphere by PyBullet ray casts
(anything in the scene can occlude); a tool with fewer than 3 visible spheres reported
missing; a rigid fit per tool whose RMS residual is the quality; a 60 Hz frame counter; a
latency in whole frames; all seeded. Times are simulated seconds since tracking started.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pybullet as pb
from sksurgerycore.baseclasses.tracker import SKSBaseTracker

from twinsim import frames
from twinsim.tracking.markers import MarkerGeometry, fit_marker
from twinsim.tracking.volume import FRAME_RATE_HZ, MIN_VISIBLE_SPHERES, MeasurementVolume

VEGA_RMS_MM = 0.12


@dataclass
class SimulatedTool:
    """A marker in the simulated room: its geometry and where it truly is (ground truth)."""

    port_handle: int
    marker: MarkerGeometry
    T_world_tool_m: Callable[[], np.ndarray]  # ground truth, metres
    sphere_offsets_mm: np.ndarray | None = None  # where the built spheres sit off the definition (tool frame)

    @property
    def true_spheres_mm(self) -> np.ndarray:
        return self.marker.spheres_mm if self.sphere_offsets_mm is None else self.marker.spheres_mm + self.sphere_offsets_mm


class SystematicField:
    """A smooth random 3D error field (mm) over the camera frame: a sum of seeded plane waves.

    Each of ``n_waves`` waves has a random direction, a wavelength near ``length_mm`` and a
    random vector amplitude; the amplitudes are scaled so the field's RMS over space is
    ``rms_mm``. Points closer than a fraction of ``length_mm`` get nearly the same error,
    which is why averaging frames, or fitting several spheres, does not remove it.
    """

    def __init__(self, rms_mm: float, length_mm: float, seed: int = 0, n_waves: int = 12) -> None:
        rng = np.random.default_rng(seed + 7919)
        d = rng.normal(size=(n_waves, 3))
        self.k = d / np.linalg.norm(d, axis=1, keepdims=True) * (2 * np.pi / (length_mm * rng.uniform(0.7, 1.4, (n_waves, 1))))
        self.phase = rng.uniform(0, 2 * np.pi, n_waves)
        a = rng.normal(size=(n_waves, 3))
        # A cosine with a uniform random phase has mean square 1/2.
        self.amplitude = a * (rms_mm / np.sqrt(0.5 * np.sum(a**2))) if rms_mm > 0 else np.zeros_like(a)

    def __call__(self, p_mm: np.ndarray) -> np.ndarray:
        return np.cos(np.asarray(p_mm) @ self.k.T + self.phase) @ self.amplitude


class SimulatedVega(SKSBaseTracker):
    """``configuration`` takes NDITracker's keys (``smoothing buffer``, ``use quaternions``) plus
    ``noise rms mm`` (0.12, white), ``systematic rms mm`` (0), ``systematic length mm`` (400),
    ``systematic seed`` (0), ``latency s`` (0.0142, rounded to whole frames), ``seed`` (0)."""

    def __init__(self, configuration: dict[str, Any], tools: list[SimulatedTool],
                 T_world_cam_m: Callable[[], np.ndarray], client: int | None = None,
                 volume: MeasurementVolume | None = None) -> None:
        super().__init__(configuration)
        if not tools:
            raise ValueError("the simulated tracker needs at least one tool")
        handles = [t.port_handle for t in tools]
        if len(set(handles)) != len(handles):
            raise ValueError(f"port handles must be unique, got {handles}")
        self.tools = tools
        self.T_world_cam_m = T_world_cam_m
        self.client = client
        self.volume = volume or MeasurementVolume()
        self.noise_rms_mm = float(configuration.get("noise rms mm", VEGA_RMS_MM))
        self.systematic = SystematicField(float(configuration.get("systematic rms mm", 0.0)),
                                          float(configuration.get("systematic length mm", 400.0)),
                                          int(configuration.get("systematic seed", 0)))
        self.latency_frames = round(float(configuration.get("latency s", 0.0142)) * FRAME_RATE_HZ)
        self.rng = np.random.default_rng(configuration.get("seed", 0))
        self.frame_number = 0
        self._pending: deque = deque()
        self.last_spheres: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # handle -> (true, measured, visible)
        self._view_dir = np.array([0.0, 0.0, 1.0])
        self._state = "ready"

    # ---- the NDITracker interface ---------------------------------------------------
    def start_tracking(self) -> None:
        self._state = "tracking"

    def stop_tracking(self) -> None:
        self._state = "ready"

    def close(self) -> None:
        self._state = "closed"

    def get_tool_descriptions(self) -> tuple[list[int], list[str]]:
        return [t.port_handle for t in self.tools], [t.marker.name for t in self.tools]

    def get_frame(self) -> tuple[list, list, list, list, list]:
        """One tracker frame (advances the 60 Hz clock by one frame)."""
        if self._state != "tracking":
            raise ValueError("Called get_frame before start_tracking")
        self._pending.append(self._measure())
        self.frame_number += 1
        if len(self._pending) > self.latency_frames:
            frame = self._pending.popleft()
        else:  # the pipeline is still filling: nothing measured yet has arrived
            frame = self._missing_frame()
        handles, stamps, numbers, rots, trans, quality = frame
        self.add_frame_to_buffer(handles, stamps, numbers, rots, trans, quality, rot_is_quaternion=True)
        return self.get_smooth_frame(handles)

    # ---- simulation -----------------------------------------------------------------
    def _missing_frame(self) -> tuple:
        n = len(self.tools)
        t = self.frame_number / FRAME_RATE_HZ
        return ([tl.port_handle for tl in self.tools], [t] * n, [self.frame_number] * n,
                [np.full(4, np.nan) for _ in range(n)], [np.full(3, np.nan) for _ in range(n)], [np.nan] * n)

    def _line_of_sight(self, cam_world_m: np.ndarray, spheres_world_m: np.ndarray) -> np.ndarray:
        if self.client is None:
            return np.ones(len(spheres_world_m), dtype=bool)
        cam_world_m = cam_world_m + self._view_dir * 0.005  # start in front of the camera's own face
        d = spheres_world_m - cam_world_m
        # Stop the ray short of the sphere so the marker's own mount does not occlude it.
        ends = spheres_world_m - d / np.linalg.norm(d, axis=1, keepdims=True) * 0.012
        hits = pb.rayTestBatch([cam_world_m.tolist()] * len(ends), ends.tolist(), physicsClientId=self.client)
        return np.array([h[0] == -1 for h in hits])

    def _measure(self) -> tuple:
        T_world_cam = self.T_world_cam_m()
        self._view_dir = T_world_cam[:3, 2]
        T_cam_world_mm = frames.scale_translation(frames.invert(T_world_cam), 1000.0)
        t_now = self.frame_number / FRAME_RATE_HZ
        handles, stamps, numbers, rots, trans, quality = [], [], [], [], [], []
        sigma = self.noise_rms_mm / np.sqrt(3.0)
        for tool in self.tools:
            T_world_tool = tool.T_world_tool_m()
            world_m = frames.transform_points(T_world_tool, tool.true_spheres_mm * 1e-3)
            true_cam = frames.transform_points(T_cam_world_mm, world_m * 1000.0)
            visible = self.volume.contains(true_cam) & self._line_of_sight(T_world_cam[:3, 3], world_m)
            measured = true_cam + self.systematic(true_cam) + self.rng.normal(0.0, sigma, true_cam.shape)
            self.last_spheres[tool.port_handle] = (true_cam, measured, visible)
            handles.append(tool.port_handle)
            stamps.append(t_now)
            numbers.append(self.frame_number)
            if visible.sum() >= MIN_VISIBLE_SPHERES:
                T, rms = fit_marker(tool.marker.spheres_mm[visible], measured[visible])
                q_xyzw = frames.matrix_to_quat_xyzw(T[:3, :3])
                rots.append(np.r_[q_xyzw[3], q_xyzw[:3]])  # NDI order: qw, qx, qy, qz
                trans.append(T[:3, 3].copy())
                quality.append(rms)
            else:
                rots.append(np.full(4, np.nan))
                trans.append(np.full(3, np.nan))
                quality.append(np.nan)
        return handles, stamps, numbers, rots, trans, quality
