"""A drive through a scene: speed profile with stops, camera poses over time, exposure over time.

Speed varies between about 5 and 15 m/s with limited acceleration; a stop brakes to 0, holds, and pulls
away. Lateral drift, pitch/roll jitter and bumps are functions of the distance travelled, so while the car
stands still the camera stands exactly still (the static stretches the motion filter must drop).
Exposure is a function of time: it keeps drifting while the car waits, as light does.
"""
from dataclasses import dataclass, field

import numpy as np

from world.camera import pose_from_heading
from world.road import LANE_WIDTH_M
from world.scene import Scene, generate_scene

CAMERA_HEIGHT_M = 1.65
START_S_M = 12.0
ACCELERATION_MPS2 = 1.5
BRAKING_MPS2 = 2.5
MIN_SPEED_MPS, MAX_SPEED_MPS = 5.0, 15.0


@dataclass(frozen=True)
class DriveSpec:
    """What happens in a drive. `stops` are (start time, hold duration) pairs in seconds."""

    seed: int
    duration_s: float
    stops: tuple[tuple[float, float], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class SpeedProfile:
    """Piecewise-linear speed: `speed_mps[i]` at `time_s[i]`, linear in between."""

    time_s: np.ndarray
    speed_mps: np.ndarray

    def speed(self, t_s: np.ndarray) -> np.ndarray:
        return np.interp(t_s, self.time_s, self.speed_mps)

    def distance(self, t_s: np.ndarray) -> np.ndarray:
        """Distance travelled since t = 0, exact for the piecewise-linear speed."""
        t_s = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        segment_m = 0.5 * (self.speed_mps[1:] + self.speed_mps[:-1]) * np.diff(self.time_s)
        cumulative_m = np.concatenate([[0.0], np.cumsum(segment_m)])
        i = np.clip(np.searchsorted(self.time_s, t_s, side="right") - 1, 0, len(self.time_s) - 2)
        dt = np.clip(t_s - self.time_s[i], 0.0, None)
        span = self.time_s[i + 1] - self.time_s[i]
        slope = (self.speed_mps[i + 1] - self.speed_mps[i]) / span
        inside = cumulative_m[i] + self.speed_mps[i] * dt + 0.5 * slope * dt**2
        beyond = t_s > self.time_s[-1]
        return np.where(beyond, cumulative_m[-1] + self.speed_mps[-1] * (t_s - self.time_s[-1]), inside)


def speed_profile(spec: DriveSpec, rng: np.random.Generator) -> SpeedProfile:
    """Cruise at random speeds, ramping between them; brake into each stop, hold, pull away.

    A stop starts on time unless the car is too fast to brake for it, then as soon as it can.
    """
    stops = sorted(spec.stops)
    parked_at_start = bool(stops) and stops[0][0] <= 0.0
    t, v = 0.0, 0.0 if parked_at_start else float(rng.uniform(MIN_SPEED_MPS, MAX_SPEED_MPS))
    knots = [(t, v)]
    end_s = spec.duration_s + 5.0
    while t < end_s:
        cruise_s = float(rng.uniform(3, 8)) if v > 0.0 else 0.0
        target = float(rng.uniform(MIN_SPEED_MPS, MAX_SPEED_MPS))
        ramp_s = abs(target - v) / ACCELERATION_MPS2
        if stops and t + cruise_s + ramp_s + target / BRAKING_MPS2 >= stops[0][0]:
            start_s, hold_s = stops.pop(0)
            start_s = max(start_s, t + v / BRAKING_MPS2)
            brake_from_s = start_s - v / BRAKING_MPS2
            if brake_from_s > t:
                knots.append((brake_from_s, v))
            if start_s > brake_from_s:
                knots.append((start_s, 0.0))
            t, v = start_s + hold_s, 0.0
            knots.append((t, v))
            continue
        if cruise_s > 0.0:
            t += cruise_s
            knots.append((t, v))
        t += ramp_s
        v = target
        knots.append((t, v))
    time_s, speed_mps = np.array(knots).T
    return SpeedProfile(time_s, speed_mps)


class Drive:
    """A scene and a camera moving through it; `pose(t)` and `exposure(t)` for any times."""

    def __init__(self, spec: DriveSpec):
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 1])
        self.profile = speed_profile(spec, rng)
        self.scene: Scene = generate_scene(spec.seed, START_S_M + float(self.profile.distance(spec.duration_s)[0]))
        self.phases = rng.uniform(0, 2 * np.pi, size=8)

    def poses(self, t_s: np.ndarray) -> np.ndarray:
        """(N, 4, 4) camera-to-world poses of the left camera at times `t_s`."""
        s = START_S_M + self.profile.distance(t_s)
        p = self.phases
        drift_m = 0.25 * np.sin(2 * np.pi * s / 137.0 + p[0])
        drift_slope = 0.25 * 2 * np.pi / 137.0 * np.cos(2 * np.pi * s / 137.0 + p[0])
        xy, heading = self.scene.road.to_world(s, -LANE_WIDTH_M / 2 + drift_m)
        pitch = 0.006 * np.sin(2 * np.pi * s / 11.3 + p[1]) + 0.002 * np.sin(2 * np.pi * s / 3.1 + p[2])
        roll = 0.004 * np.sin(2 * np.pi * s / 17.9 + p[3]) + 0.0015 * np.sin(2 * np.pi * s / 4.3 + p[4])
        height = CAMERA_HEIGHT_M + 0.015 * np.sin(2 * np.pi * s / 5.7 + p[5])
        yaw = heading + np.arctan(drift_slope)
        return np.stack([
            pose_from_heading(np.array([xy[i, 0], xy[i, 1], height[i]]), yaw[i], pitch[i], roll[i])
            for i in range(len(s))
        ])

    def exposure(self, t_s: np.ndarray) -> np.ndarray:
        """(N,) multiplicative exposure gain, drifting slowly around 1 (+-12 %)."""
        p = self.phases
        return 1.0 + 0.08 * np.sin(2 * np.pi * t_s / 19.0 + p[6]) + 0.04 * np.sin(2 * np.pi * t_s / 6.1 + p[7])

    def static_time_ranges(self) -> list[tuple[float, float]]:
        """(start, end) seconds in which the car stands still, within the drive."""
        ranges = []
        t, v = self.profile.time_s, self.profile.speed_mps
        for i in range(len(t) - 1):
            if v[i] == 0.0 and v[i + 1] == 0.0 and t[i] < self.spec.duration_s:
                ranges.append((float(t[i]), float(min(t[i + 1], self.spec.duration_s))))
        return ranges
