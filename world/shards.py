"""World drives written straight to GeoPt shards, with the exact optical flow of every sample.

Mined shards have no ground truth; these do, so pretraining can report end-point error (EPE) on them.
Samples follow `formats.shard_schema` exactly (frames t-1, t, t+1 as JPEG, SampleMeta) plus ``flow.npy`` and
``flow_previous.npy``: the flow from frame t to frame t+1 and to frame t-1, in stored pixels. Written through a
temporary name, one shard per call.
"""
import contextlib
import io
import multiprocessing
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from formats.camera import intrinsics_normalised
from formats.files import atomic_path
from formats.shard_schema import SampleMeta, encode_jpeg, sample_dict, sample_key, write_sample
from world.camera import PinholeCamera
from world.drive import Drive, DriveSpec
from world.render import Renderer, flow_between

FRAME_RATE_HZ = 10.0


def npy_bytes(flow: np.ndarray) -> bytes:
    """(H, W, 2) flow -> the bytes of a float32 .npy file, as the shard's flow members hold it."""
    buffer = io.BytesIO()
    np.save(buffer, flow.astype(np.float32))
    return buffer.getvalue()


def write_world_shard(path: Path, seed: int, samples: int, width_px: int = 640, height_px: int = 192,
                      jpeg_quality: int = 92, frame_rate_hz: float = FRAME_RATE_HZ, frames_per_sample: int = 3) -> int:
    """`samples` runs of `frames_per_sample` consecutive frames (odd; runs share only their end frames) of
    drive `seed` at `frame_rate_hz` into one shard; returns the sample count. A lower rate means longer
    displacements between frames (5 Hz at 320x96 moves pixels as far as 10 Hz at 640x192); the flow
    stored is from the middle frame to the next and to the previous one."""
    assert frames_per_sample % 2 == 1 and frames_per_sample >= 3, frames_per_sample
    camera = PinholeCamera.kitti_like(width_px, height_px)
    run = frames_per_sample - 1
    frame_count = run * samples + 1
    drive = Drive(DriveSpec(seed=seed, duration_s=frame_count / frame_rate_hz + 1.0))
    renderer = Renderer(drive.scene, camera)
    times_s = np.arange(frame_count) / frame_rate_hz
    poses, exposures = drive.poses(times_s), drive.exposure(times_s)
    frames = [renderer.render(pose, float(gain)) for pose, gain in zip(poses, exposures)]
    jpegs = [encode_jpeg(f.rgb, jpeg_quality) for f in frames]
    video_id = f"world-{seed}"
    with atomic_path(Path(path)) as tmp, tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(samples):
            indices = list(range(run * i, run * i + frames_per_sample))
            middle = indices[run // 2]
            flows = [flow_between(frames[middle].depth_m, poses[middle], poses[neighbour], camera)
                     for neighbour in (middle + 1, middle - 1)]
            meta = SampleMeta(video_id=video_id, source_url=f"world:seed={seed}", frame_indices=indices,
                              timestamps_s=[j / frame_rate_hz for j in indices], fps_out=frame_rate_hz,
                              scene_index=0, motion_px=[], crop_box=(0, 0, width_px, height_px),
                              working_size=(width_px, height_px), original_size=(width_px, height_px),
                              extra={"dataset": "world", "intrinsics_normalised":
                                     intrinsics_normalised(camera.K, width_px, height_px).tolist()})
            write_sample(tar, sample_dict(sample_key(video_id, indices[0]), [jpegs[j] for j in indices], meta,
                                          npy_bytes(flows[0]), flow_previous_npy=npy_bytes(flows[1])))
    return samples


def write_world_shards(out_dir: Path, drives: int, samples: int, first_seed: int, width_px: int = 640,
                       height_px: int = 192, frame_rate_hz: float = FRAME_RATE_HZ, workers: int = 1,
                       progress: Callable[[int], None] | None = None, frames_per_sample: int = 3) -> list[Path]:
    """Drives `first_seed` .. `first_seed + drives - 1` as OUT/0000.tar, 0001.tar, ... (`write_world_shard`),
    `workers` drives rendered side by side; `progress(1)` after each. Returns the shard paths."""
    paths = [Path(out_dir) / f"{i:04d}.tar" for i in range(drives)]
    jobs = [(path, first_seed + i, samples, width_px, height_px, 92, frame_rate_hz, frames_per_sample)
            for i, path in enumerate(paths)]
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")))
            done = pool.map(write_world_shard, *zip(*jobs))
        else:
            done = (write_world_shard(*job) for job in jobs)
        for _ in done:
            if progress:
                progress(1)
    return paths
