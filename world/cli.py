"""`geopt-world`: render the procedural driving world as internet-like videos, KITTI raw trees or stills."""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click
import cv2
import numpy as np
from tqdm import tqdm

from world.drive import DRIVE_KINDS, LIGHTS
from world.overlays import EGO_KINDS
from world.video import SUPPORTED_FPS, internet_like_spec, render_video, single_shot_spec


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 640x192, got {text!r}")
    if not (8 <= width <= 8192 and 8 <= height <= 8192):
        raise click.BadParameter(f"{width}x{height} is outside 8..8192 pixels per side")
    return width, height


def _writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".geopt-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise click.ClickException(f"cannot write to {path}: {error.strerror or error}")
    return path


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Procedural driving world with exact depth: GeoPt's default data and test fixture."""


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("data/world_videos"),
              show_default=True, help="Folder for the videos; each gets a .json sidecar with the truth.")
@click.option("--videos", type=click.IntRange(1), default=3, show_default=True, help="How many videos.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the first video; video i uses seed + i. Same seed, same pixels.")
@click.option("--duration", "duration_s", type=click.FloatRange(0.5), default=12.0, show_default=True,
              help="Driving seconds per video, shared by its shots (the parked stop comes on top).")
@click.option("--fps", type=click.Choice(list(SUPPORTED_FPS)), default="30", show_default=True,
              help="Frame rate; 29.97 is NTSC's 30000/1001.")
@click.option("--cuts", type=click.IntRange(0), default=2, show_default=True,
              help="Hard cuts per video, each switching to a drive of another seed.")
@click.option("--stop", "stop_s", type=click.FloatRange(0.0), default=3.0, show_default=True,
              help="Seconds one shot stands parked before pulling away (0: no static stretch).")
@click.option("--size", default="640x360", show_default=True, help="Frame size WIDTHxHEIGHT (even numbers).")
@click.option("--content-height", type=click.IntRange(8), default=288, show_default=True,
              help="Height of the picture between the black letterbox bars (= frame height for no bars).")
@click.option("--kind", type=click.Choice(list(DRIVE_KINDS)), default="street", show_default=True,
              help="street: city driving with cuts and a parked stretch. highway: one uncut shot at 25-33 m/s "
                   "through open land (mostly sky and far field). parked_traffic: one uncut shot from a parked "
                   "camera while cars drive past. --cuts and --stop apply to street only.")
@click.option("--ego", type=click.Choice(["none", *EGO_KINDS]), default="none", show_default=True,
              help="The own car fixed in the picture: hood (bonnet along the bottom, ~17 % of the picture "
                   "height) or dashboard (dark band over the bottom quarter).")
@click.option("--a-pillar", is_flag=True, help="Add a dark windscreen pillar slanting down the left edge.")
@click.option("--logo", is_flag=True, help="Add a small semi-opaque channel logo near the top-right corner.")
@click.option("--ego-glare", is_flag=True,
              help="The own car changes in place: the hood mirrors the scene, sunlight drifts over the dashboard.")
@click.option("--light", type=click.Choice(list(LIGHTS)), default="day", show_default=True,
              help="night: dark, lit by the car's headlights, street lamps and lit windows.")
@click.option("--day-seed", type=int, default=None,
              help="The same route on another day: other parked cars, sun, clouds and exposure, slower traffic.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Processes rendering videos side by side (each video is the same whatever the number).")
def render(out_dir, videos, seed, duration_s, fps, cuts, stop_s, size, content_height, kind, ego, a_pillar, logo,
           ego_glare, light, day_seed, workers):
    """Render internet-like driving videos (H.264 mp4): cuts, letterbox, clock overlay, a parked stretch;
    optionally static overlays (--ego, --a-pillar, --logo, listed with their boxes in the .json sidecar and
    masked in a .static.png beside it)."""
    width, height = _size(size)
    _writable_dir(out_dir)
    ego = None if ego == "none" else ego
    specs = []
    for i in range(videos):
        try:
            if kind == "street":
                specs.append(internet_like_spec(seed + i, duration_s, fps, cuts, stop_s, width, height, content_height,
                                                ego, a_pillar, logo, light, day_seed, ego_glare))
            else:
                specs.append(single_shot_spec(seed + i, kind, duration_s, fps, width, height, content_height,
                                              ego, a_pillar, logo, light=light, day_seed=day_seed,
                                              ego_glare=ego_glare))
        except ValueError as error:
            raise click.ClickException(str(error))
    paths = [out_dir / f"world_{seed + i:04d}.mp4" for i in range(videos)]
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool, \
                tqdm(total=videos, unit="video", desc="render") as bar:
            truths = []
            for truth in pool.map(render_video, specs, paths):
                truths.append((truth, seed + len(truths)))
                bar.update(1)
    else:
        total = sum(round(shot.duration_s * spec.frame_rate) for spec in specs for shot in spec.shots)
        with tqdm(total=total, unit="frame", desc="render") as bar:
            truths = [(render_video(spec, path, bar.update), seed + i) for i, (spec, path) in enumerate(zip(specs, paths))]
    for truth, video_seed in truths:
        click.echo(f"{out_dir / f'world_{video_seed:04d}.mp4'}: {truth.frame_count} frames at {truth.fps} fps, "
                   f"cuts at {truth.cut_frames}, static {truth.static_ranges}, content box {truth.content_box}")


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("data/world_kitti"),
              show_default=True, help="Root of the KITTI raw tree (date folders, splits/, world_truth.json).")
@click.option("--train-drives", type=click.IntRange(1), default=3, show_default=True,
              help="Drives for the eigen_zhou train/val split files.")
@click.option("--test-drives", type=click.IntRange(1), default=1, show_default=True,
              help="Drives for the Eigen-style test split and gt_depths.npz; never in train/val.")
@click.option("--frames", "frames_per_drive", type=click.IntRange(3), default=30, show_default=True,
              help="Frames per drive at KITTI's 10 Hz.")
@click.option("--size", default="1242x375", show_default=True, help="Image size WIDTHxHEIGHT (KITTI: 1242x375).")
@click.option("--seed", "first_seed", type=int, default=100, show_default=True,
              help="Seed of drive 0; drive i uses seed + i.")
@click.option("--test-stride", type=click.IntRange(1), default=3, show_default=True,
              help="Every n-th frame of a test drive goes into the test split.")
@click.option("--test-kind", type=click.Choice(["street", "highway"]), default="street", show_default=True,
              help="Kind of the test drives (training drives are streets): highway tests generalisation to scenes "
                   "never seen in training.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Processes rendering drives side by side (the tree is the same whatever the number).")
def kitti(out_dir, train_drives, test_drives, frames_per_drive, size, first_seed, test_stride, test_kind, workers):
    """Write stereo drives in KITTI raw's exact layout with velodyne scans, calibration, Monodepth2 split
    files and gt_depths.npz, so code written for real KITTI runs on it unchanged. Reruns resume."""
    from world.kitti_export import KittiExportSpec, export_kitti

    width, height = _size(size)
    _writable_dir(out_dir)
    spec = KittiExportSpec(out_dir, train_drives, test_drives, frames_per_drive, width, height, first_seed,
                           test_stride=test_stride, test_kind=test_kind)
    with tqdm(total=(train_drives + test_drives) * frames_per_drive, unit="frame", desc="kitti") as bar:
        truth = export_kitti(spec, bar.update, workers)
    sizes = truth["split_sizes"]
    click.echo(f"{out_dir}: {len(truth['drives'])} drives of {frames_per_drive} stereo frames at {width}x{height}; "
               f"splits eigen_zhou train {sizes['train']}, val {sizes['val']}, eigen test {sizes['test']} "
               f"(+ splits/eigen/gt_depths.npz)")


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("shards/world"), show_default=True,
              help="Folder for 0000.tar, 0001.tar, ...: one shard per drive.")
@click.option("--drives", type=click.IntRange(1), default=2, show_default=True, help="Drives (one shard each).")
@click.option("--samples", type=click.IntRange(1), default=20, show_default=True,
              help="Samples (consecutive frame triplets) per drive.")
@click.option("--size", default="640x192", show_default=True, help="Frame size WIDTHxHEIGHT.")
@click.option("--seed", type=int, default=500, show_default=True, help="Seed of drive 0; drive i uses seed + i.")
@click.option("--fps", "frame_rate_hz", type=click.FloatRange(0.5, 100), default=10.0, show_default=True,
              help="Frame rate of the samples; lower moves pixels farther between frames.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Processes rendering drives side by side.")
def shards(out_dir, drives, samples, size, seed, frame_rate_hz, workers):
    """Write world drives as GeoPt shards carrying the exact flow of each sample (flow.npy), so that
    pretraining validation reports end-point error on them."""
    from world.shards import write_world_shards

    width, height = _size(size)
    _writable_dir(out_dir)
    with tqdm(total=drives, unit="drive", desc="shards") as bar:
        write_world_shards(out_dir, drives, samples, seed, width, height, frame_rate_hz, workers, bar.update)
    click.echo(f"{out_dir}: {drives} shards of {samples} samples at {width}x{height}, {frame_rate_hz:g} Hz, "
               "each with its true flow")


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("docs"), show_default=True,
              help="Folder for <name>_rgb.png, <name>_depth.png and <name>_flow.png.")
@click.option("--seed", type=int, default=7, show_default=True, help="Scene seed.")
@click.option("--time", "time_s", type=click.FloatRange(0.0), default=4.0, show_default=True,
              help="Seconds into the drive.")
@click.option("--size", default="640x192", show_default=True, help="Image size WIDTHxHEIGHT.")
@click.option("--name", default="world_frame", show_default=True, help="File name prefix.")
def still(out_dir, seed, time_s, size, name):
    """Save one frame, its exact depth (coloured, near = bright) and its true flow to the next frame (0.1 s)."""
    from torchvision.utils import flow_to_image
    import torch

    from world.camera import PinholeCamera
    from world.drive import Drive, DriveSpec
    from world.render import Renderer, flow_between

    width, height = _size(size)
    _writable_dir(out_dir)
    drive = Drive(DriveSpec(seed=seed, duration_s=time_s + 1.0))
    camera = PinholeCamera.kitti_like(width, height)
    poses = drive.poses(np.array([time_s, time_s + 0.1]))
    frame = Renderer(drive.scene, camera).render(poses[0], float(drive.exposure(np.array([time_s]))[0]))
    inverse_depth = np.where(np.isfinite(frame.depth_m), 1.0 / frame.depth_m, 0.0)
    scaled = np.clip(inverse_depth / np.percentile(inverse_depth, 95), 0, 1)
    depth_image = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)
    flow = flow_between(frame.depth_m, poses[0], poses[1], camera)
    flow_image = flow_to_image(torch.from_numpy(flow).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    paths = [out_dir / f"{name}_{kind}.png" for kind in ("rgb", "depth", "flow")]
    for path, image in zip(paths, (cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR), depth_image,
                                   cv2.cvtColor(flow_image, cv2.COLOR_RGB2BGR))):
        cv2.imwrite(str(path), image)
    click.echo("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
