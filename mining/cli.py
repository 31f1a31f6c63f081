"""`geopt-mine`: URL list -> downloads -> WebDataset shards of moving, scene-consistent frame runs."""
import sys
from collections import Counter
from pathlib import Path

import click
from tqdm import tqdm

from formats.files import fields_of
from mining.chain import ChainConfig
from mining.crop import FixedCrop
from mining.decode import DecodeConfig
from mining.download import DownloadConfig, download_all
from mining.motion import MotionConfig
from mining.pack import PackConfig
from mining.shard import ShardConfig, download_and_shard, shard_videos
from mining.shard_writer import ShardLayout


def _download_options(f):
    options = [
        click.option("--list", "url_list", type=click.Path(path_type=Path, dir_okay=False), required=True,
                     help="Text file with one video URL per line; blank lines and '#' comments are ignored."),
        click.option("--downloads", "download_dir", type=click.Path(path_type=Path), default=DownloadConfig.out_dir,
                     show_default=True, help="Folder for videos, provenance (.info.json), archive.txt, status.jsonl."),
        click.option("--max-height", "max_height_px", type=click.IntRange(144), default=DownloadConfig.max_height_px,
                     show_default=True,
                     help="Highest video height fetched, in pixels (video-only formats preferred; no audio)."),
        click.option("--rate-limit", default=DownloadConfig.rate_limit, help="Download speed cap per video, e.g. 2M or 500K bytes/s."),
        click.option("--cookies", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
                     help="Netscape cookies.txt passed to yt-dlp, for sites that need a login."),
        click.option("--retries", type=click.IntRange(0), default=DownloadConfig.retries, show_default=True,
                     help="Retries per download (and per fragment)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _shard_options(f):
    options = [
        click.option("--out", "out_dir", default=str(ShardConfig.out_dir), show_default=True,
                     help="Shard folder: 0000.tar, 0001.tar, ..., val/, manifest.json, stats.json, status.jsonl. "
                          "A local path or any fsspec URL (file:///data/shards, s3://bucket/shards, ...)."),
        click.option("--width", "width_px", type=click.IntRange(64), default=DecodeConfig.width_px, show_default=True,
                     help="Working width in pixels: every video is decoded once at this width (aspect kept)."),
        click.option("--fps", type=click.FloatRange(0.5, 60), default=DecodeConfig.fps, show_default=True,
                     help="Frames per second taken from every video, whatever its own rate."),
        click.option("--frames", "frames_per_sample", type=click.IntRange(2, 16), default=PackConfig.frames_per_sample,
                     show_default=True, help="Consecutive frames per sample (3: t-1, t, t+1)."),
        click.option("--stride", type=click.IntRange(1), default=PackConfig.stride,
                     help="Frames between neighbouring sample starts in a run [default: frames - 1, so "
                          "neighbours share one frame and every usable pair is stored once]."),
        click.option("--min-motion-px", type=click.FloatRange(0), default=MotionConfig.min_motion_px, show_default=True,
                     help="Median optical flow (pixels at the working width, per output frame) below which "
                          "the camera counts as standing still and the frames are dropped."),
        click.option("--duplicate-diff", type=click.FloatRange(0), default=MotionConfig.duplicate_diff, show_default=True,
                     help="Mean grey-level difference (0-255) below which two frames are duplicates."),
        click.option("--flash-delta", type=click.FloatRange(0), default=MotionConfig.flash_delta, show_default=True,
                     help="Brightness jump (0-255 grey levels) that marks a single frame as a flash."),
        click.option("--scene-threshold", type=click.FloatRange(0), default=ChainConfig.scene_threshold,
                     show_default=True,
                     help="PySceneDetect ContentDetector threshold for hard cuts (lower finds more cuts)."),
        click.option("--cut-residual", type=click.FloatRange(0), default=MotionConfig.cut_residual, show_default=True,
                     help="A detected cut stands only if warping by optical flow leaves a mean grey "
                          "difference (0-255) above this; lower trusts the detector more."),
        click.option("--crop", "fixed_crop", default="0,0,0,0", show_default=True,
                     help="Fixed crop TOP,BOTTOM,LEFT,RIGHT in working-size pixels after black bars are "
                          "removed, e.g. to cut a burnt-in timestamp strip."),
        click.option("--jpeg-quality", type=click.IntRange(50, 100), default=PackConfig.jpeg_quality, show_default=True,
                     help="JPEG quality of stored frames."),
        click.option("--shard-size-mb", type=click.FloatRange(1), default=ShardLayout.shard_size_mb, show_default=True,
                     help="Target shard size in megabytes."),
        click.option("--val-fraction", type=click.FloatRange(0, 0.5), default=ShardLayout.val_fraction,
                     show_default=True,
                     help="Share of videos held out whole in OUT/val/ (at least one when there are two or more)."),
        click.option("--workers", type=click.IntRange(1), default=ShardConfig.workers, show_default=True,
                     help="Videos mined in parallel, one process each (with --ray and no address: the CPUs of "
                          "the local Ray instance). Output is identical for any count."),
        click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                     help="Mine each video (and write each shard) as a Ray task: '--ray' alone starts Ray here, "
                          "'--ray HOST:6379' joins a cluster (`ray start --head` on one machine, `ray start "
                          "--address HOST:6379` on the others; every node needs GeoPt installed and must reach "
                          "--out). Needs `pip install -e .[ray]`. Output equals a local run's."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _shard_config(in_dir: Path, options: dict) -> ShardConfig:
    """The ShardConfig of a command's options (named after the config fields they fill)."""
    try:
        options = {**options, "fixed_crop": FixedCrop.parse(options.get("fixed_crop", "0,0,0,0"))}
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--crop")
    chain = ChainConfig(decode=DecodeConfig(**fields_of(DecodeConfig, options)),
                        motion=MotionConfig(**fields_of(MotionConfig, options)),
                        pack=PackConfig(**fields_of(PackConfig, options)), **fields_of(ChainConfig, options))
    return ShardConfig(in_dir=in_dir, chain=chain, layout=ShardLayout(**fields_of(ShardLayout, options)),
                       **fields_of(ShardConfig, options))


def _print_shard_summary(result: dict, out_dir: Path) -> None:
    totals, manifest = result["stats"]["totals"], result["manifest"]
    width = max([5] + [len(vid) for vid in result["stats"]["videos"]])
    click.echo(f"\n{'video':<{width}} {'status':<8} {'decoded':>8} {'kept':>6} {'samples':>8}  reason")
    for vid, r in result["stats"]["videos"].items():
        click.echo(f"{vid:<{width}} {r['status']:<8} {r['frames_decoded']:>8} {r['frames_kept']:>6} "
                   f"{r['samples']:>8}  {r['reason']}")
    minutes = totals["source_minutes"]
    per_minute = totals["samples"] / minutes if minutes else 0.0
    dropped = ", ".join(f"{k} {v}" for k, v in totals["dropped"].items()) or "none"
    click.echo(f"\n{totals['samples']} samples from {totals['videos_with_samples']} of {totals['videos']} videos "
               f"({per_minute:.0f} samples per minute of video); frames decoded {totals['frames_decoded']}, "
               f"kept {totals['frames_kept']}, dropped: {dropped}")
    click.echo(f"shards: {len(manifest['train'])} train, {len(manifest['val'])} val in {out_dir} "
               f"(manifest.json, stats.json)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Mine driving videos into WebDataset shards for GeoPt pretraining."""


@main.command()
@_download_options
@click.option("--workers", type=click.IntRange(1), default=DownloadConfig.workers, show_default=True,
              help="Parallel downloads.")
def download(download_dir, **options):
    """Download every URL of a list with yt-dlp. Reruns skip what is done; every URL gets a status row.

    Exits non-zero only when nothing succeeded. Local files are refused: give their folder to `shard --in`.
    """
    config = DownloadConfig(out_dir=download_dir, **fields_of(DownloadConfig, options))
    try:
        with tqdm(unit="video", desc="download") as bar:
            results = download_all(config, on_result=lambda r: bar.update(1))
    except FileNotFoundError as error:
        raise click.ClickException(str(error))
    click.echo(f"\n{'status':<8} {'video':<32} url / reason")
    for r in results:
        click.echo(f"{r.status:<8} {r.video_id[:32]:<32} {r.url}" + (f"\n{'':<41}{r.reason}" if r.reason else ""))
    counts = Counter(r.status for r in results)
    click.echo(f"\n{counts['ok']} downloaded, {counts['skipped']} skipped, {counts['failed']} failed "
               f"-> {download_dir} (status.jsonl)")
    if results and not counts["ok"] and not counts["skipped"]:
        sys.exit(1)


@main.command()
@click.option("--in", "in_dir", type=click.Path(path_type=Path, file_okay=False), default=ShardConfig.in_dir,
              show_default=True, help="Folder of videos: downloads, or any local folder of dashcam files.")
@_shard_options
def shard(in_dir, **options):
    """Mine every video of a folder into shards: decode once, crop bars, cut scenes, drop static frames,
    pack runs of consecutive frames. Killed and rerun, it resumes and gives the same shards."""
    config = _shard_config(in_dir, options)
    try:
        with tqdm(unit="video", desc="videos", position=0) as videos, \
                tqdm(unit="frame", desc="frames", position=1, disable=config.workers > 1 or config.ray_address) as frames:
            result = shard_videos(config, on_video=lambda r, done: videos.update(1),
                                  on_frame=None if frames.disable else frames.update)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        raise click.ClickException(str(error))
    _print_shard_summary(result, config.out_dir)
    if not result["stats"]["totals"]["samples"]:
        sys.exit(1)


@main.command()
@_download_options
@_shard_options
@click.option("--keep-videos", is_flag=True, help="Keep downloaded videos after mining (default: delete).")
def run(download_dir, keep_videos, **options):
    """Download and mine in one go: each URL is fetched and mined by a worker, then the shards are built."""
    config = _shard_config(download_dir, options)
    download_config = DownloadConfig(**{**fields_of(DownloadConfig, options), "out_dir": download_dir, "workers": 1})
    failed = []

    def on_url(download_result, report):
        bar.update(1)
        if download_result.status == "failed":
            failed.append(download_result)

    try:
        with tqdm(unit="video", desc="videos") as bar:
            result = download_and_shard(download_config, config, keep_videos, on_url=on_url)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        raise click.ClickException(str(error))
    for r in failed:
        click.echo(f"download failed: {r.url}\n    {r.reason}")
    _print_shard_summary(result, config.out_dir)
    if not result["stats"]["totals"]["samples"]:
        sys.exit(1)


def _import_options(f):
    options = [
        click.option("--root", type=click.Path(path_type=Path, file_okay=False), required=True,
                     help="Dataset root folder, laid out as the dataset ships it."),
        click.option("--width", "width_px", type=click.IntRange(64), default=DecodeConfig.width_px, show_default=True,
                     help="Stored width in pixels (aspect kept)."),
        click.option("--frames", "frames_per_sample", type=click.IntRange(2, 16), default=PackConfig.frames_per_sample,
                     show_default=True, help="Consecutive frames per sample."),
        click.option("--stride", type=click.IntRange(1), default=PackConfig.stride,
                     help="Frames between neighbouring sample starts [default: frames - 1]."),
        click.option("--min-motion-px", type=click.FloatRange(0), default=MotionConfig.min_motion_px, show_default=True,
                     help="Median optical flow (stored pixels per frame) below which frames count as static."),
        click.option("--no-motion-filter", is_flag=True,
                     help="Keep every consecutive pair: no scene cuts, no static or duplicate dropping."),
        click.option("--jpeg-quality", type=click.IntRange(50, 100), default=PackConfig.jpeg_quality, show_default=True,
                     help="JPEG quality of stored frames."),
        click.option("--shard-size-mb", type=click.FloatRange(1), default=ShardLayout.shard_size_mb, show_default=True,
                     help="Target shard size in megabytes."),
        click.option("--val-fraction", type=click.FloatRange(0, 0.5), default=ShardLayout.val_fraction,
                     show_default=True, help="Share of sequences held out whole in OUT/val/."),
        click.option("--workers", type=click.IntRange(1), default=ShardConfig.workers, show_default=True,
                     help="Sequences imported in parallel, one process each."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _run_import(sequences, note, out_dir, no_motion_filter, **options):
    from mining.shard import import_sequences

    config = _shard_config(Path("."), {**options, "out_dir": out_dir})
    with tqdm(total=len(sequences), unit="sequence", desc="import") as bar, \
            tqdm(unit="frame", desc="frames", disable=config.workers > 1) as frames:
        result = import_sequences(sequences, config, not no_motion_filter, lambda r, done: bar.update(1),
                                  frames.update)
    _print_shard_summary(result, out_dir)
    for line in note:
        click.echo(line)
    if not result["stats"]["totals"]["samples"]:
        sys.exit(1)


@main.group(name="import")
def import_group():
    """Turn datasets on disk (KITTI raw, Cityscapes sequences) into the same shards as mined video."""


@import_group.command(name="kitti")
@_import_options
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("shards/kitti"), show_default=True,
              help="Shard folder for the import.")
@click.option("--split", "only_split", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Import only the drives named in this Monodepth2 split file (e.g. eigen_zhou/train_files.txt).")
@click.option("--exclude-split", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Leave out every drive named in this test split [default: ROOT/splits/eigen/test_files.txt "
                   "when present]. Keeps the Eigen test scenes out of pretraining.")
def import_kitti(root, out_dir, only_split, exclude_split, **options):
    """KITTI raw drives (image_02 and image_03 as two monocular streams, PNG or JPEG) -> shards whose
    samples carry the calibrated intrinsics."""
    from mining.datasets import kitti_sequences

    default_exclude = Path(root) / "splits" / "eigen" / "test_files.txt"
    exclude = exclude_split or (default_exclude if default_exclude.is_file() else None)
    try:
        sequences, facts = kitti_sequences(root, exclude, only_split)
    except (FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error))
    if exclude is None:
        note = ["no Eigen test split given or found under ROOT/splits/eigen: no drive was excluded "
                "(pass --exclude-split to keep test scenes out)"]
    else:
        note = [f"excluded {len(facts['excluded_drives'])} drives of {exclude} (test leakage): "
                + (", ".join(facts["excluded_drives"]) or "none")]
    _run_import(sequences, note, out_dir, **options)


@import_group.command(name="cityscapes")
@_import_options
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("shards/cityscapes"),
              show_default=True, help="Shard folder for the import.")
@click.option("--crop-bottom", type=click.FloatRange(0, 0.6), default=0.25, show_default=True,
              help="Fraction of the image height cut from the bottom, where the ego car's hood is.")
def import_cityscapes(root, out_dir, crop_bottom, **options):
    """Cityscapes leftImg8bit_sequence snippets -> shards, the ego-car hood cropped."""
    from mining.datasets import cityscapes_sequences

    try:
        sequences, _ = cityscapes_sequences(root, crop_bottom)
    except (FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error))
    _run_import(sequences, [], out_dir, **options)


if __name__ == "__main__":
    main()
