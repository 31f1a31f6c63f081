"""KITTI raw as it lies on disk, read the way Monodepth2 reads it.

Layout: ``ROOT/<date>/calib_cam_to_cam.txt``, ``ROOT/<date>/calib_velo_to_cam.txt`` and
``ROOT/<date>/<date>_drive_<NNNN>_sync/{image_02,image_03,velodyne_points}/data/<%010d>.<ext>``.
Split files hold lines ``"<date>/<drive folder> <frame index> <l|r>"``. Ground-truth depth for the Eigen
split is built from the velodyne scans exactly as Monodepth2's ``export_gt_depth.py`` builds it,
rounding quirk included, so scores on it are comparable with the literature.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIDE_TO_CAMERA = {"l": 2, "r": 3}
IMAGE_EXTENSIONS = (".png", ".jpg")


@dataclass(frozen=True)
class SplitEntry:
    """One line of a split file: a frame of a drive seen by the left (2) or right (3) colour camera."""

    folder: str
    frame_index: int
    side: str

    @property
    def date(self) -> str:
        return self.folder.split("/")[0]


def read_split_file(path: Path) -> list[SplitEntry]:
    """Monodepth2 split file -> entries. A missing side (as in some test lists) means the left camera."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    entries = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (2, 3) or not fields[1].isdigit():
            raise ValueError(f"{path}:{line_number}: expected '<folder> <frame index> [l|r]', got {line!r}")
        side = fields[2] if len(fields) == 3 else "l"
        if side not in SIDE_TO_CAMERA:
            raise ValueError(f"{path}:{line_number}: side must be 'l' or 'r', got {side!r}")
        entries.append(SplitEntry(fields[0], int(fields[1]), side))
    return entries


def write_split_file(path: Path, entries: list[SplitEntry], zero_pad_frames: bool = False) -> None:
    """Write entries in Monodepth2's format; the Eigen test list pads frame indices to 10 digits."""
    lines = [
        f"{e.folder} {e.frame_index:010d} {e.side}" if zero_pad_frames else f"{e.folder} {e.frame_index} {e.side}"
        for e in entries
    ]
    Path(path).write_text("\n".join(lines) + "\n")


def image_path(root: Path, entry: SplitEntry) -> Path:
    """Path of an entry's image, PNG as KITTI ships it or JPEG as Monodepth2's converted copy has it."""
    folder = Path(root) / entry.folder / f"image_0{SIDE_TO_CAMERA[entry.side]}" / "data"
    for ext in IMAGE_EXTENSIONS:
        candidate = folder / f"{entry.frame_index:010d}{ext}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no image for {entry.folder} frame {entry.frame_index} side {entry.side} in {folder}")


def velodyne_path(root: Path, entry: SplitEntry) -> Path:
    return Path(root) / entry.folder / "velodyne_points" / "data" / f"{entry.frame_index:010d}.bin"


def read_calib_file(path: Path) -> dict[str, np.ndarray]:
    """KITTI calibration text (``key: numbers``) -> arrays; lines that are not numbers (calib_time) are skipped."""
    calib = {}
    for line in Path(path).read_text().splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        try:
            calib[key.strip()] = np.array([float(x) for x in value.split()])
        except ValueError:
            continue
    return calib


def load_velodyne_points(path: Path) -> np.ndarray:
    """(N, 4) float32 x, y, z, reflectance in the velodyne frame, reflectance set to 1 as Monodepth2 does."""
    points = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    points[:, 3] = 1.0
    return points


def velodyne_to_image(calib_dir: Path, camera: int = 2) -> tuple[np.ndarray, tuple[int, int]]:
    """(3, 4) projection from homogeneous velodyne points to rectified image `camera`, and its (H, W)."""
    cam_to_cam = read_calib_file(Path(calib_dir) / "calib_cam_to_cam.txt")
    velo_to_cam = read_calib_file(Path(calib_dir) / "calib_velo_to_cam.txt")
    velo_to_cam_4x4 = np.eye(4)
    velo_to_cam_4x4[:3, :3] = velo_to_cam["R"].reshape(3, 3)
    velo_to_cam_4x4[:3, 3] = velo_to_cam["T"]
    cam_to_rect = np.eye(4)
    cam_to_rect[:3, :3] = cam_to_cam["R_rect_00"].reshape(3, 3)
    projection = cam_to_cam[f"P_rect_0{camera}"].reshape(3, 4)
    width, height = cam_to_cam[f"S_rect_0{camera}"].astype(np.int64)
    return projection @ cam_to_rect @ velo_to_cam_4x4, (int(height), int(width))


def generate_depth_map(calib_dir: Path, velo_path: Path, camera: int = 2, velodyne_depth: bool = False) -> np.ndarray:
    """Sparse (H, W) depth in metres from one velodyne scan, 0 where no point lands.

    Follows Monodepth2: points behind the sensor (x < 0) dropped, pixel = round(projection) - 1, the
    nearest point kept where several land on one pixel. `velodyne_depth` takes the velodyne x (forward
    distance) as depth instead of the projected z; Monodepth2's Eigen ground truth is made that way.
    """
    velo_to_image, (height, width) = velodyne_to_image(calib_dir, camera)
    velo = load_velodyne_points(velo_path).astype(np.float64)
    velo = velo[velo[:, 0] >= 0]
    projected = velo @ velo_to_image.T
    projected[:, :2] /= projected[:, 2:3]
    if velodyne_depth:
        projected[:, 2] = velo[:, 0]
    cols = np.round(projected[:, 0]) - 1
    rows = np.round(projected[:, 1]) - 1
    inside = (cols >= 0) & (rows >= 0) & (cols < width) & (rows < height)
    depth = np.full((height, width), np.inf)
    np.minimum.at(depth, (rows[inside].astype(np.int64), cols[inside].astype(np.int64)), projected[inside, 2])
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


def load_gt_depths(path: Path) -> list[np.ndarray]:
    """Monodepth2's ``gt_depths.npz`` (key ``data``: one (H, W) array per test image) -> list of arrays."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth depth file not found: {path}")
    data = np.load(path, fix_imports=True, encoding="latin1", allow_pickle=True)["data"]
    return [np.asarray(d, dtype=np.float32) for d in data]


def save_gt_depths(path: Path, depths: list[np.ndarray]) -> None:
    """Write ``gt_depths.npz`` as Monodepth2 does, through a temporary name so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    shapes = {d.shape for d in depths}
    if len(shapes) == 1:
        data = np.stack([d.astype(np.float32) for d in depths])
    else:
        data = np.empty(len(depths), dtype=object)
        data[:] = [d.astype(np.float32) for d in depths]
    np.savez_compressed(tmp, data=data)
    tmp.replace(path)
