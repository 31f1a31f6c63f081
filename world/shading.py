"""Colours of ray hits: sky, ground (street or highway: road, markings, kerb, sidewalk, grass), boxes and spheres.

By day a colour depends only on where a point lies on its surface, its material and the fixed sun (its
strength set by the scene's cloud cover), never on the camera, so every frame of a drive agrees
photometrically. At night the light comes from the street lamps and the car's own headlights, which
travel with the camera: a surface brightens as the car comes near, as it does in a night video. Arrays are per hit pixel: `rays` (3, n) float32
world-frame directions scaled to camera z = 1, `depth_m` (n,) the ray parameter, `footprint_m` (n,) the
size of the pixel on the surface, which picks the blur level of textures and anti-aliases the patterns.
"""
import numpy as np

from world import highway, textures
from world.road import BUILDING_LINE_M, CARRIAGEWAY_HALF_WIDTH_M, KERB_WIDTH_M, LANE_WIDTH_M
from world.scene import Material, Scene

AMBIENT = np.float32(0.55)
ROAD_LOOKAHEAD_M = 120.0
"""Road pieces starting further ahead are not tried; painted lines there are below a pixel at 640 wide."""
HIGHWAY_LOOKAHEAD_M = 400.0
"""A highway's far lines stay in view to the horizon; its pieces are long, so few are tried."""
GROUND_TEXTURE_PERIOD_M = 102.4
"""Every ground texture repeats after a divisor of this (256 texels of 0.4, 0.025 or 0.0125 m)."""
PAINT = np.float32([0.85, 0.85, 0.82])
GLASS = np.float32([0.14, 0.17, 0.22])
TYRE_BAND_M = 0.32
OVERCAST_AMBIENT = np.float32(0.3)
"""Share of the direct sunlight that a full overcast turns into light from the whole sky."""
OVERCAST_SKY = np.float32([0.72, 0.73, 0.75])
NIGHT_AMBIENT = np.float32(0.012)
NIGHT_SKY = np.float32([0.006, 0.009, 0.02])
CITY_GLOW = np.float32([0.035, 0.028, 0.02])
"""Clouds at night, lit from below by the town."""
LAMP_INTENSITY = 30.0
"""Street lamp irradiance at 1 m (light units: 1 is the full sun on a level surface)."""
LAMP_RANGE_M = 60.0
HEADLIGHT_INTENSITY = 100.0
HEADLIGHT_OFFSET_M = np.array([0.0, 1.0, 2.0])
"""Headlights relative to the camera (right, down, ahead along the car's heading): 1 m lower, 2 m ahead."""
HEADLIGHT_SPREAD = (0.35, 0.15, 0.025)
"""Beam width as the tangent of the angle off its axis: sideways, downwards, upwards (a low beam's cut-off)."""
HEADLIGHT_DIP = np.float32(0.035)
"""The beam's axis points this far below the horizon (tangent)."""
WINDOW_GLOW = np.float32([0.55, 0.42, 0.25])
LIT_WINDOW_NOISE = np.float32(0.52)
"""A window is lit where the unit-variance noise of its cell exceeds this: about 30 % of them."""


class Shader:
    """Per-scene tables in float32 and one method per kind of hit. Arrays are component planes:
    rays (3, n), colours (3, n)."""

    def __init__(self, scene: Scene):
        self.scene = scene
        b = scene.boxes
        self.box_cos = np.cos(b.yaw_rad).astype(np.float32)
        self.box_sin = np.sin(b.yaw_rad).astype(np.float32)
        self.box_centre = np.ascontiguousarray(b.centre_m.T, dtype=np.float32)
        self.box_half = np.ascontiguousarray(b.half_size_m.T, dtype=np.float32)
        self.box_colour = np.ascontiguousarray(b.colour.T, dtype=np.float32)
        self.box_offset = b.texture_offset.astype(np.float32)
        self.box_spacing = np.maximum(b.window_spacing_m, 1e-3).astype(np.float32)
        self.box_floor = b.floor_height_m.astype(np.float32)
        sp = scene.spheres
        self.sphere_centre = np.ascontiguousarray(sp.centre_m.T, dtype=np.float32)
        self.sphere_radius = sp.radius_m.astype(np.float32)
        self.sphere_colour = np.ascontiguousarray(sp.colour.T, dtype=np.float32)
        self.sphere_offset = sp.texture_offset.astype(np.float32)
        self.sun = scene.sun_direction.astype(np.float32)
        self.ambient = AMBIENT + (1 - AMBIENT) * OVERCAST_AMBIENT * np.float32(scene.overcast)
        self.direct = (1 - AMBIENT) * (1 - np.float32(scene.overcast))
        self.ground = self.highway_ground if scene.kind == "highway" else self.street_ground
        """Shader of ground hits, by the kind of scene."""
        self.camera_pose = np.eye(4)
        """(4, 4) camera-to-world pose of the frame being shaded: the headlights travel with it."""

    def light(self, origin, rays, depth_m, nx, ny, nz) -> np.ndarray:
        """(n,) light falling on hits with world normals (nx, ny, nz): ambient plus sun by day; at night
        ambient, headlights and street lamps, each falling off with the square of the distance."""
        if not self.scene.at_night:
            return self.ambient + self.direct * np.maximum(nx * self.sun[0] + ny * self.sun[1] + nz * self.sun[2], 0)
        points = [np.float32(origin[k]) + depth_m * rays[k] for k in range(3)]
        total = np.full(depth_m.shape, NIGHT_AMBIENT, dtype=np.float32) + self._headlights(points, nx, ny, nz)
        for lamp in self.scene.lamps_m[np.linalg.norm(self.scene.lamps_m - origin, axis=1) < LAMP_RANGE_M]:
            total += self._point_light(points, nx, ny, nz, lamp, LAMP_INTENSITY)
        return total

    @staticmethod
    def _point_light(points, nx, ny, nz, source_m, intensity: float, floor: float = 0.0) -> np.ndarray:
        """Irradiance from a point source: intensity * max(cos, floor) / distance^2 (distance at least 1 m)."""
        to_source = [np.float32(source_m[k]) - points[k] for k in range(3)]
        distance_sq = np.maximum(to_source[0] ** 2 + to_source[1] ** 2 + to_source[2] ** 2, 1.0)
        cosine = (nx * to_source[0] + ny * to_source[1] + nz * to_source[2]) / np.sqrt(distance_sq)
        return np.float32(intensity) * np.maximum(cosine, floor) / distance_sq

    def _headlights(self, points, nx, ny, nz) -> np.ndarray:
        """Irradiance from the low beams: a spot along the car's heading, level with the road however the
        camera is tilted, wide sideways and cut off above."""
        rotation, camera_m = self.camera_pose[:3, :3], self.camera_pose[:3, 3]
        forward = np.array([rotation[0, 2], rotation[1, 2], 0.0]) / np.hypot(rotation[0, 2], rotation[1, 2])
        right, down = np.array([forward[1], -forward[0], 0.0]), np.array([0.0, 0.0, -1.0])
        source_m = camera_m + right * HEADLIGHT_OFFSET_M[0] + down * HEADLIGHT_OFFSET_M[1] + forward * HEADLIGHT_OFFSET_M[2]
        relative = [points[k] - np.float32(source_m[k]) for k in range(3)]
        along, across, below = (sum(np.float32(axis[k]) * relative[k] for k in range(3)) for axis in (forward, right, down))
        ahead = np.maximum(along, np.float32(0.1))
        sideways, dip = across / ahead, below / ahead - HEADLIGHT_DIP
        spread_x, spread_down, spread_up = HEADLIGHT_SPREAD
        vertical = np.where(dip > 0, dip / np.float32(spread_down), dip / np.float32(spread_up))
        beam = np.exp(-(sideways / np.float32(spread_x)) ** 2 - vertical ** 2) * (along > 0)
        # A grazing road still shows the beam (rough asphalt scatters back): the cosine never drops under 0.25.
        return beam * self._point_light(points, nx, ny, nz, source_m, HEADLIGHT_INTENSITY, floor=0.25)

    def sky(self, origin, rays, depth_m, footprint_m, index) -> np.ndarray:
        horizontal = np.hypot(rays[0], rays[1])
        elevation = np.arctan2(rays[2], horizontal)
        azimuth = np.arctan2(rays[1], rays[0])
        u = azimuth * np.float32(textures.TILE_TEXELS / (2 * np.pi))
        v = np.tan(np.clip(elevation, 0.02, 1.3)) * np.float32(60.0)
        clouds = np.clip(textures.noise(u, v, np.full_like(u, 0.5)) * 0.6 + 0.1, 0, 1)
        if self.scene.at_night:
            return NIGHT_SKY[:, None] + CITY_GLOW[:, None] * clouds
        gradient = np.clip(elevation / 0.6, 0, 1)
        haze = np.float32([0.85, 0.88, 0.92])[:, None]
        base = haze + (self.scene.sky_tint.astype(np.float32)[:, None] - haze) * gradient
        base += (OVERCAST_SKY[:, None] - base) * np.float32(self.scene.overcast)
        return base + (np.float32([0.95, 0.95, 0.96])[:, None] - base) * clouds

    def _ground_surface(self, origin, rays, depth_m, footprint_m, lookahead_m: float):
        """Per ground hit: texture coordinates x, y (m), footprint (m), road coordinates s, d (m), and fine
        grain and coarse patch noise."""
        dx, dy = depth_m * rays[0], depth_m * rays[1]
        # Texture coordinates: the camera position folded modulo a common period of all ground
        # textures, so float32 keeps sub-millimetre precision anywhere in the world.
        x = np.float32(origin[0] % GROUND_TEXTURE_PERIOD_M) + dx
        y = np.float32(origin[1] % GROUND_TEXTURE_PERIOD_M) + dy
        # Footprint grows as the view grazes the ground: 1 / sin(angle between ray and ground).
        grazing = -rays[2] / np.sqrt(rays[0] * rays[0] + rays[1] * rays[1] + rays[2] * rays[2])
        fp = footprint_m / np.sqrt(np.maximum(grazing, 0.05))
        road = self.scene.road
        s_cam, _ = road.road_coords(np.zeros(1), np.zeros(1), (0.0, road.length_m), origin[:2])
        s, d = road.road_coords(dx, dy, (float(s_cam[0]) - 40.0, float(s_cam[0]) + lookahead_m), origin[:2])
        grain = textures.surface_noise(x, y, 0.0125, fp)
        patch = textures.surface_noise(x, y, 0.4, fp, offset=911.0)
        return x, y, fp, s, d, grain, patch

    def street_ground(self, origin, rays, depth_m, footprint_m, index) -> np.ndarray:
        x, y, fp, s, d, grain, patch = self._ground_surface(origin, rays, depth_m, footprint_m, ROAD_LOOKAHEAD_M)
        abs_d = np.abs(d)
        out = np.empty((3, len(x)), dtype=np.float32)

        on_road = abs_d < CARRIAGEWAY_HALF_WIDTH_M
        i = np.flatnonzero(on_road)
        asphalt = (0.30 + 0.035 * grain[i] + 0.03 * patch[i]) * np.float32([1.0, 1.0, 1.03])[:, None]
        si, di, fi = s[i], d[i], fp[i]
        centre_dashes = textures.periodic_interval_coverage(si, 9.0, 0.0, 3.0, fi) * textures.stripe_coverage(di, 0.07, fi)
        lane_edges = textures.stripe_coverage(abs_d[i] - LANE_WIDTH_M, 0.07, fi)
        bays = textures.periodic_interval_coverage(si, 6.0, 0.0, 0.12, fi) * textures.stripe_coverage(
            abs_d[i] - (CARRIAGEWAY_HALF_WIDTH_M - 0.9), 0.9, fi)
        paint = np.clip(centre_dashes + lane_edges + 0.8 * bays, 0, 1)
        out[:, i] = asphalt + (PAINT[:, None] - asphalt) * paint

        on_kerb = ~on_road & (abs_d < CARRIAGEWAY_HALF_WIDTH_M + KERB_WIDTH_M)
        i = np.flatnonzero(on_kerb)
        out[:, i] = 0.62 + 0.05 * grain[i]

        on_sidewalk = ~on_road & ~on_kerb & (abs_d < BUILDING_LINE_M + 4.0)
        i = np.flatnonzero(on_sidewalk)
        si, di, fi = s[i], d[i], fp[i]
        joints = np.maximum(textures.stripe_coverage(textures.distance_to_grid(si, 0.6), 0.01, fi),
                            textures.stripe_coverage(textures.distance_to_grid(di, 0.6), 0.01, fi))
        slab = textures.noise(np.floor(si / 0.6), np.floor(di / 0.6) + 37.0, np.zeros_like(fi))
        out[:, i] = self.scene.sidewalk_colour.astype(np.float32)[:, None] * (
            (1.0 + 0.06 * slab + 0.05 * grain[i]) * (1 - 0.45 * joints))

        i = np.flatnonzero(~on_road & ~on_kerb & ~on_sidewalk)
        blades = textures.surface_noise(x[i], y[i], 0.025, fp[i], 300.0)
        out[:, i] = np.float32([0.22, 0.36, 0.14])[:, None] * (1 + 0.25 * blades + 0.15 * patch[i])
        return out * self.light(origin, rays, depth_m, 0, 0, 1)

    def highway_ground(self, origin, rays, depth_m, footprint_m, index) -> np.ndarray:
        """Four lanes with a solid double centre line, dashed lane lines and solid edge lines, a gravel
        shoulder, then grass and dry fields to the horizon."""
        x, y, fp, s, d, grain, patch = self._ground_surface(origin, rays, depth_m, footprint_m,
                                                            HIGHWAY_LOOKAHEAD_M)
        abs_d = np.abs(d)
        out = np.empty((3, len(x)), dtype=np.float32)

        on_road = abs_d < highway.ASPHALT_HALF_WIDTH_M
        i = np.flatnonzero(on_road)
        asphalt = (0.27 + 0.035 * grain[i] + 0.03 * patch[i]) * np.float32([1.0, 1.0, 1.03])[:, None]
        si, ai, fi = s[i], abs_d[i], fp[i]
        centre = textures.stripe_coverage(ai - 0.15, 0.06, fi)
        lanes = textures.periodic_interval_coverage(si, 12.0, 0.0, 3.0, fi) * textures.stripe_coverage(
            ai - LANE_WIDTH_M, 0.075, fi)
        edges = textures.stripe_coverage(ai - highway.EDGE_LINE_M, 0.1, fi)
        paint = np.clip(centre + lanes + edges, 0, 1)
        out[:, i] = asphalt + (PAINT[:, None] - asphalt) * paint

        on_gravel = ~on_road & (abs_d < highway.SHOULDER_HALF_WIDTH_M)
        i = np.flatnonzero(on_gravel)
        out[:, i] = np.float32([0.50, 0.47, 0.42])[:, None] * (1 + 0.15 * grain[i] + 0.1 * patch[i])

        i = np.flatnonzero(~on_road & ~on_gravel)
        blades = textures.surface_noise(x[i], y[i], 0.025, fp[i], 300.0)
        fields = np.clip(0.5 + 0.6 * textures.surface_noise(x[i], y[i], 0.4, fp[i], 1733.0), 0, 1)
        grass = np.float32([0.22, 0.36, 0.14])[:, None] + (np.float32([0.52, 0.48, 0.26])
                                                           - np.float32([0.22, 0.36, 0.14]))[:, None] * fields
        out[:, i] = grass * (1 + 0.25 * blades + 0.15 * patch[i])
        return out * self.light(origin, rays, depth_m, 0, 0, 1)

    def boxes(self, origin, rays, depth_m, footprint_m, index) -> np.ndarray:
        c, s = self.box_cos.take(index), self.box_sin.take(index)
        centre, half = self.box_centre.take(index, axis=1), self.box_half.take(index, axis=1)
        px = (np.float32(origin[0]) - centre[0]) + depth_m * rays[0]
        py = (np.float32(origin[1]) - centre[1]) + depth_m * rays[1]
        pz = (np.float32(origin[2]) - centre[2]) + depth_m * rays[2]
        lx, ly = c * px + s * py, c * py - s * px
        ax, ay, az = np.abs(lx) / half[0], np.abs(ly) / half[1], np.abs(pz) / half[2]
        on_x = (ax >= ay) & (ax >= az)
        on_z = ~on_x & (az >= ay)
        on_y = ~on_x & ~on_z
        # Face coordinates: u along the face, v height above the ground (across, on tops).
        u = np.where(on_x, ly, lx)
        v = np.where(on_z, ly, pz + centre[2])
        nx = np.where(on_x, np.sign(lx), np.float32(0))
        ny = np.where(on_y, np.sign(ly), np.float32(0))
        nz = np.where(on_z, np.sign(pz), np.float32(0))
        wx, wy = c * nx - s * ny, s * nx + c * ny
        cos_incidence = np.abs(wx * rays[0] + wy * rays[1] + nz * rays[2]) / np.sqrt(
            rays[0] * rays[0] + rays[1] * rays[1] + rays[2] * rays[2])
        fp = footprint_m / np.sqrt(np.maximum(cos_incidence, 0.05))
        offset = self.box_offset.take(index)
        grain = textures.surface_noise(u, v, 0.015, fp, offset)
        coarse = textures.surface_noise(u, v, 0.4, fp, offset + 500.0)
        brightness = 1.0 + 0.08 * grain + 0.06 * coarse
        glass_cover = np.zeros_like(brightness)
        material = self.scene.boxes.material.take(index)

        i = np.flatnonzero(material == Material.BRICK)
        if len(i):
            vi, fi = v[i], fp[i]
            row_shift = np.float32(0.11) * (np.floor(vi / 0.075) % 2)
            mortar = np.maximum(textures.stripe_coverage(textures.distance_to_grid(vi, 0.075), 0.006, fi),
                                textures.stripe_coverage(textures.distance_to_grid(u[i] + row_shift, 0.22), 0.006, fi))
            brightness[i] *= 1 - 0.35 * mortar
        i = np.flatnonzero(((material == Material.BRICK) | (material == Material.PLASTER)) & ~on_z)
        if len(i):
            spacing, floor_h, vi, fi = self.box_spacing[index[i]], self.box_floor[index[i]], v[i], fp[i]
            columns = textures.periodic_interval_coverage(u[i] / spacing, 1.0, 0.25, 0.5, fi / spacing)
            rows = textures.periodic_interval_coverage(vi / floor_h, 1.0, 0.3, 0.5, fi / floor_h)
            glass_cover[i] = columns * rows * (vi > 0.9 * floor_h) * (vi < 2 * half[2, i] - 0.5)
        glass_cover[(material == Material.CAR_CABIN) & ~on_z] = 1.0
        i = np.flatnonzero((material == Material.CAR_BODY) & ~on_z)
        if len(i):
            tyres = textures.stripe_coverage(v[i] - (centre[2, i] - half[2, i]), TYRE_BAND_M, fp[i])
            brightness[i] *= 1 - 0.8 * tyres
        i = np.flatnonzero(material == Material.FOLIAGE)
        if len(i):
            leaves = textures.surface_noise(u[i], v[i], 0.03, fp[i], offset[i] + 77.0)
            brightness[i] = 1 + 0.35 * leaves + 0.1 * coarse[i]
        out = self.box_colour.take(index, axis=1) * brightness
        i = np.flatnonzero(glass_cover)
        glass = GLASS[:, None] * (1 + 0.5 * coarse[i] + 0.1 * grain[i])
        out[:, i] += (glass - out[:, i]) * glass_cover[i]
        lit = out * self.light(origin, rays, depth_m, wx, wy, nz)
        if self.scene.at_night:
            facade = (material == Material.BRICK) | (material == Material.PLASTER)
            lit += self._lit_windows(u, v, index, glass_cover * facade)
        return lit

    def _lit_windows(self, u, v, index, glass_cover) -> np.ndarray:
        """(3, n) light given off by the windows that are lit at night (`LIT_WINDOW_NOISE`)."""
        spacing, floor_h = self.box_spacing.take(index), self.box_floor.take(index)
        cell_u, cell_v = np.floor(u / spacing), np.floor(v / floor_h)
        switch = textures.noise(cell_u * 17.0 + self.box_offset.take(index), cell_v * 23.0, np.zeros_like(u))
        return WINDOW_GLOW[:, None] * ((switch > LIT_WINDOW_NOISE) * glass_cover)

    def spheres(self, origin, rays, depth_m, footprint_m, index) -> np.ndarray:
        centre = self.sphere_centre.take(index, axis=1)
        inverse_radius = 1.0 / self.sphere_radius.take(index)
        px = (np.float32(origin[0]) - centre[0]) + depth_m * rays[0]
        py = (np.float32(origin[1]) - centre[1]) + depth_m * rays[1]
        pz = (np.float32(origin[2]) - centre[2]) + depth_m * rays[2]
        u = px + 0.6 * py
        v = pz - 0.4 * py
        offset = self.sphere_offset.take(index)
        leaves = textures.surface_noise(u, v, 0.025, footprint_m, offset)
        clumps = textures.surface_noise(u, v, 0.25, footprint_m, offset + 99.0)
        lit = self.light(origin, rays, depth_m, px * inverse_radius, py * inverse_radius, pz * inverse_radius)
        return self.sphere_colour.take(index, axis=1) * ((1 + 0.4 * leaves + 0.25 * clumps) * lit)
