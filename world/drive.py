"""A drive through a scene: speed profile with stops, camera poses over time, exposure over time.

Speed varies between about 5 and 15 m/s with limited acceleration; a stop brakes to 0, holds, and pulls
away. Lateral drift, pitch/roll jitter and bumps are functions of the distance travelled, so while the car
stands still the camera stands exactly still (the static stretches the motion filter must drop).
Exposure is a function of time: it keeps drifting while the car waits, as light does.

The kind of drive picks the scene and the motion: "street" (the above), "highway" (25-33 m/s on a wide,
gently curving road through open land, a smooth ride) or "parked_traffic" (the camera never moves and
its exposure is held, while traffic drives past). Any drive may happen at night (street lamps and the
car's headlights light the scene; a highway at night is a lit stretch, `world.highway.lamp_posts`) or
on another day (`DriveSpec.day_seed`).
"""
from dataclasses import dataclass, field

import numpy as np

from world.camera import pose_from_heading
from world.highway import generate_highway_scene, lamp_posts
from world.road import LANE_WIDTH_M
from world.scene import Scene, another_day, at_night, generate_scene
from world.traffic import CAMERA_D_M, camera_s_m, generate_parked_traffic_scene

CAMERA_HEIGHT_M = 1.65
START_S_M = 12.0
ACCELERATION_MPS2 = 1.5
BRAKING_MPS2 = 2.5
MIN_SPEED_MPS, MAX_SPEED_MPS = 5.0, 15.0
LIGHTS = ("day", "night")
OTHER_DAY_SPEED = (0.8, 0.95)
"""Another day on the same route the traffic is slower by this factor (the drive never leaves the street
the first day's drive was generated for): the same stops at later times, the car elsewhere in its lane."""


@dataclass(frozen=True)
class DriveKind:
    """How a kind of drive moves the camera."""

    lane_d_m: float
    """Lateral offset of the camera from the road centreline (negative: right of it)."""
    speed_mps: tuple[float, float]
    """Cruising speeds are drawn between these; (0, 0) for a parked camera."""
    jitter_scale: float
    """Multiplies the pitch, roll and bump amplitudes."""
    wavelength_scale: float
    """Stretches every distance-based wobble (drift, pitch, roll, bumps): a smoother road."""
    mount_pitch_rad: float = 0.0
    """The camera's fixed upward tilt: more sky in view."""


DRIVE_KINDS = {
    "street": DriveKind(-LANE_WIDTH_M / 2, (MIN_SPEED_MPS, MAX_SPEED_MPS), 1.0, 1.0),
    "highway": DriveKind(-1.5 * LANE_WIDTH_M, (25.0, 33.0), 0.3, 6.0, mount_pitch_rad=0.06),
    "parked_traffic": DriveKind(CAMERA_D_M, (0.0, 0.0), 1.0, 1.0),
}


@dataclass(frozen=True)
class DriveSpec:
    """What happens in a drive. `stops` are (start time, hold duration) pairs in seconds; `kind` is one of
    DRIVE_KINDS (a parked_traffic drive ignores stops: it stands still throughout)."""

    seed: int
    duration_s: float
    stops: tuple[tuple[float, float], ...] = field(default_factory=tuple)
    kind: str = "street"
    light: str = "day"
    """"day" or "night" (`world.scene.at_night`)."""
    day_seed: int | None = None
    """None: the drive as `seed` has it. Else the same route on another day: slower (`OTHER_DAY_SPEED`), in
    another line within the lane, under other parked cars, sun, clouds and exposure
    (`world.scene.another_day`)."""

    def __post_init__(self):
        if self.kind not in DRIVE_KINDS:
            raise ValueError(f"drive kind must be one of {', '.join(DRIVE_KINDS)}, got {self.kind!r}")
        if self.light not in LIGHTS:
            raise ValueError(f"light must be one of {', '.join(LIGHTS)}, got {self.light!r}")


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
    """Cruise at random speeds of the drive's kind, ramping between them; brake into each stop, hold,
    pull away.

    A stop starts on time unless the car is too fast to brake for it, then as soon as it can.
    """
    min_speed_mps, max_speed_mps = DRIVE_KINDS[spec.kind].speed_mps
    stops = sorted(spec.stops)
    parked_at_start = bool(stops) and stops[0][0] <= 0.0
    t, v = 0.0, 0.0 if parked_at_start else float(rng.uniform(min_speed_mps, max_speed_mps))
    knots = [(t, v)]
    end_s = spec.duration_s + 5.0
    while t < end_s:
        cruise_s = float(rng.uniform(3, 8)) if v > 0.0 else 0.0
        target = float(rng.uniform(min_speed_mps, max_speed_mps))
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
        self.kind = DRIVE_KINDS[spec.kind]
        rng = np.random.default_rng([spec.seed, 1])
        if spec.kind == "parked_traffic":
            self.profile = SpeedProfile(np.array([0.0, spec.duration_s + 5.0]), np.zeros(2))
            self.start_s_m = camera_s_m(spec.duration_s)
            self.scene: Scene = generate_parked_traffic_scene(spec.seed, spec.duration_s)
        else:
            self.profile = speed_profile(spec, rng)
            self.start_s_m = START_S_M
            generate = generate_highway_scene if spec.kind == "highway" else generate_scene
            self.scene = generate(spec.seed, START_S_M + float(self.profile.distance(spec.duration_s)[0]))
        self.phases = rng.uniform(0, 2 * np.pi, size=8)
        if spec.day_seed is not None:
            day = np.random.default_rng([spec.day_seed, 12])
            self.scene = another_day(self.scene, spec.day_seed)
            self.phases = day.uniform(0, 2 * np.pi, size=8)  # another place in the lane, another ride, exposure
            slower = float(day.uniform(*OTHER_DAY_SPEED))
            self.profile = SpeedProfile(self.profile.time_s / slower, self.profile.speed_mps * slower)
        if spec.light == "night":
            self.scene = at_night(lamp_posts(self.scene) if spec.kind == "highway" else self.scene)

    def poses(self, t_s: np.ndarray) -> np.ndarray:
        """(N, 4, 4) camera-to-world poses of the left camera at times `t_s`."""
        s = self.start_s_m + self.profile.distance(t_s)
        p = self.phases
        jitter, stretch = self.kind.jitter_scale, self.kind.wavelength_scale
        drift_m = 0.25 * np.sin(2 * np.pi * s / (137.0 * stretch) + p[0])
        drift_slope = 0.25 * 2 * np.pi / (137.0 * stretch) * np.cos(2 * np.pi * s / (137.0 * stretch) + p[0])
        xy, heading = self.scene.road.to_world(s, self.kind.lane_d_m + drift_m)
        pitch = jitter * (0.006 * np.sin(2 * np.pi * s / (11.3 * stretch) + p[1])
                          + 0.002 * np.sin(2 * np.pi * s / (3.1 * stretch) + p[2])) + self.kind.mount_pitch_rad
        roll = jitter * (0.004 * np.sin(2 * np.pi * s / (17.9 * stretch) + p[3])
                         + 0.0015 * np.sin(2 * np.pi * s / (4.3 * stretch) + p[4]))
        height = CAMERA_HEIGHT_M + jitter * 0.015 * np.sin(2 * np.pi * s / (5.7 * stretch) + p[5])
        yaw = heading + np.arctan(drift_slope)
        return np.stack([
            pose_from_heading(np.array([xy[i, 0], xy[i, 1], height[i]]), yaw[i], pitch[i], roll[i])
            for i in range(len(s))
        ])

    def exposure(self, t_s: np.ndarray) -> np.ndarray:
        """(N,) multiplicative exposure gain, drifting slowly around 1 (+-12 %); held at 1 for a parked
        camera, so that only the traffic changes its pixels."""
        p = self.phases
        if self.spec.kind == "parked_traffic":
            return np.ones_like(np.asarray(t_s, dtype=np.float64))
        return 1.0 + 0.08 * np.sin(2 * np.pi * t_s / 19.0 + p[6]) + 0.04 * np.sin(2 * np.pi * t_s / 6.1 + p[7])

    def static_time_ranges(self) -> list[tuple[float, float]]:
        """(start, end) seconds in which the car stands still, within the drive."""
        ranges = []
        t, v = self.profile.time_s, self.profile.speed_mps
        for i in range(len(t) - 1):
            if v[i] == 0.0 and v[i + 1] == 0.0 and t[i] < self.spec.duration_s:
                ranges.append((float(t[i]), float(min(t[i + 1], self.spec.duration_s))))
        return ranges
