"""Does geometric pretraining learn motion? Flow end-point error on world drives with true flow, per loss.

    # the CPU proxy of the seed's long displacements (10.4 px on average): ~30 min per variant alone on 2 cores
    python bench/flow_learning.py --size 192x64 --fps 5 --steps 1250 --batch-size 16 --drives 16 --samples 40 \
        --variants upsampled,pyramid --jobs 1
    # the same from mined world video (rendered, served on 127.0.0.1, mined by geopt-mine)
    python bench/flow_learning.py --data mined --size 192x64 --fps 5 --steps 1250 --batch-size 16 --variants default
    # on a GPU: bash bench/gpu_check.sh flow (mined video, 640x192 and 1024x320 at 10 Hz side by side)

Pretrains with the real loop, once per variant (loss and curriculum, `VARIANTS`) and size, and prints the
validation end-point error (EPE) on unseen world drives against the EPE of predicting no motion, the mean
predicted and true flow lengths, the share of pixels the loss excluded (out of view) and the first
validation step at or below half the zero-flow score; and the same targets scored against their previous
frame ('backward') and over both directions ('both ways'). Pretraining sees both directions, so a net
that guesses the forward flow from the target frame alone can score well forward only; both ways, a
guess scores about as badly as no motion. A net whose EPE stays at or above the zero-flow
score has learned nothing its structure encoder could pass on to depth, whatever its photometric loss
says. Writes `flow_learning.json` and pictures of EPE and loss against step to --out.

What sets the difficulty is how far pixels move between frames, in pixels: 640x192 at 10 Hz moves them
13.6 px on average (up to ~70), 192x64 at 5 Hz 10.4 px, 192x64 at 10 Hz 4.1 px.
"""
import argparse
import json
import math
import multiprocessing
import os
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geopt_vs_scratch import curve, plot_curves, run, serve, zero_flow_epe_px  # noqa: E402  (bench/, this folder)
from training.flow.loss import FlowLossConfig  # noqa: E402
from training.flow.pretrain import PretrainConfig, pretrain  # noqa: E402
from world.shards import write_world_shards  # noqa: E402

@dataclass(frozen=True)
class Variant:
    """One way to pretrain: a loss, and optionally a curriculum (a fraction of the steps in its first stage)."""
    loss: FlowLossConfig
    half_size_share: float = 0.0
    """Share of the steps trained at half size first (`PretrainConfig.half_size_steps`)."""
    short_gap_share: float = 0.0
    """Share of the steps trained on neighbouring frames before pairs two frames apart (twice the rate)."""
    film_starts_identity: bool = True
    """`PretrainConfig.film_starts_identity`."""
    coarse_to_fine: bool = False
    """`PretrainConfig.coarse_to_fine`."""
    motion_head: bool = False
    """`PretrainConfig.motion_head` (off in the variants from before 2026-12-05)."""
    antisymmetric: bool = False
    """`PretrainConfig.antisymmetric`."""
    rigid_flow: bool = False
    """`PretrainConfig.rigid_flow`."""
    flow_decoder: bool = True
    """`PretrainConfig.flow_decoder`."""
    stretch: bool = False
    """`PretrainConfig.stretch`."""


def no_extrapolation(**fields) -> FlowLossConfig:
    """A variant's loss as measured before `FlowLossConfig.extrapolation` existed: without it."""
    return FlowLossConfig(**{"extrapolation": 0.0, **fields})


PYRAMID_CENSUS_SMOOTH2 = no_extrapolation(pyramid=True, error="census", smoothness_order=2, smoothness=2.0)
VARIANTS = {
    "flat_exit": Variant(no_extrapolation(exit_costs_standing_still=False, pyramid=False)),
    "upsampled": Variant(no_extrapolation(pyramid=False)),
    "fb_check": Variant(no_extrapolation(occlusion_masking=True, pyramid=False)),
    "pyramid": Variant(no_extrapolation(pyramid=True)),
    "pyramid_motion_head": Variant(no_extrapolation(pyramid=True), motion_head=True),
    "pyramid_head_antisymmetric": Variant(no_extrapolation(pyramid=True), motion_head=True, antisymmetric=True),
    "pyramid_head_full_warp": Variant(no_extrapolation(pyramid=True, full_image_margin=0.125), motion_head=True),
    "head_antisymmetric_full_warp": Variant(no_extrapolation(pyramid=True, full_image_margin=0.125), motion_head=True,
                                            antisymmetric=True),
    "head_antisymmetric_stretch": Variant(no_extrapolation(pyramid=True), motion_head=True, antisymmetric=True,
                                          stretch=True),
    "head_antisymmetric_stretch_smooth": Variant(no_extrapolation(pyramid=True, stretch_smoothness=0.2),
                                                 motion_head=True, antisymmetric=True, stretch=True),
    "antisymmetric_stretch_full_warp": Variant(no_extrapolation(pyramid=True, full_image_margin=0.125), motion_head=True,
                                               antisymmetric=True, stretch=True),
    "antisymmetric_stretch_extrapolate": Variant(FlowLossConfig(pyramid=True, extrapolation=0.5), motion_head=True,
                                                 antisymmetric=True, stretch=True),
    "head_rigid": Variant(no_extrapolation(), motion_head=True, rigid_flow=True),
    "head_rigid_full_warp": Variant(no_extrapolation(full_image_margin=0.125), motion_head=True, rigid_flow=True),
    "head_rigid_alone_full_warp": Variant(no_extrapolation(full_image_margin=0.125), motion_head=True, rigid_flow=True,
                                          flow_decoder=False),
    "antisymmetric_rigid_alone_full_warp": Variant(no_extrapolation(full_image_margin=0.125), motion_head=True,
                                                   antisymmetric=True, rigid_flow=True, flow_decoder=False),
    "head_full_warp_smooth2": Variant(no_extrapolation(pyramid=True, full_image_margin=0.125, smoothness_order=2,
                                                     smoothness=2.0), motion_head=True),
    "default": Variant(FlowLossConfig(), motion_head=PretrainConfig.motion_head,
                       antisymmetric=PretrainConfig.antisymmetric, stretch=PretrainConfig.stretch),
    "pyramid_film_random": Variant(no_extrapolation(pyramid=True), film_starts_identity=False),
    "pyramid_census": Variant(no_extrapolation(pyramid=True, error="census")),
    "pyramid_smooth2": Variant(no_extrapolation(pyramid=True, smoothness_order=2, smoothness=2.0)),
    "pyramid_census_smooth2": Variant(PYRAMID_CENSUS_SMOOTH2),
    "pyramid_c2f": Variant(no_extrapolation(pyramid=True), coarse_to_fine=True),
    "pyramid_c2f_census_smooth2": Variant(PYRAMID_CENSUS_SMOOTH2, coarse_to_fine=True),
    "res_curriculum": Variant(PYRAMID_CENSUS_SMOOTH2, half_size_share=1 / 3),  # sizes of at least 128x128
    "gap_curriculum": Variant(PYRAMID_CENSUS_SMOOTH2, short_gap_share=1 / 3),
    "head_gap_curriculum": Variant(no_extrapolation(pyramid=True), short_gap_share=1 / 3, motion_head=True),
}
"""Loss variants by name. `flat_exit` is the loss before the 640x192 fix (each pixel out of view costs a
flat 0.1); `upsampled` the default until 2026-12-04 (every scale's flow upsampled to full size and scored
there); `pyramid` scores coarse scales on downsampled images; `default` is today's `FlowLossConfig()`; `census` compares census transforms instead of SSIM + L1; `smooth2` takes second-order
smoothness at 1/4 size instead of first-order at every scale; the curricula start at half size, or on
pairs of neighbouring frames (the world rendered at twice the rate, samples of 5 frames, pairs 2 apart);
`film_random` starts the motion code's modulation of the decoder at PyTorch's random init, not at zero;
`motion_head` adds a coarse flow read off the motion code alone to every scale (`training.flow.model.MotionHead`);
`antisymmetric` subtracts the flow under the reversed pair's code, so a still pair gets none;
`stretch` lets that flow grow going forward and shrink coming back (`PretrainConfig.stretch`), `smooth` smooths
that stretch apart from the flow (`FlowLossConfig.stretch_smoothness`);
`c2f` adds each coarser scale's flow, upsampled, to the next finer scale's."""
KEYS = ("val/epe_px", "val/flow_px", "val/true_flow_px", "val/excluded", "val/photometric", "val/epe_px_s1",
        "val/epe_px_s2", "val/epe_px_s3", "val/epe_px_in_view", "val/true_flow_px_in_view",
        "val/flow_px_same_frames", "val/epe_px_backward", "val/flow_px_backward", "val/true_flow_px_backward")


def both_ways(run_: dict) -> list[tuple[int, float]]:
    """(step, EPE / zero-flow EPE) over the validation pairs and the same targets paired with their previous
    frame, summed over both directions: what a net that reads the pair scores, where the forward score alone
    also rewards guessing the forward flow from the target frame. Empty for shards without backward flow."""
    forward = dict(run_["val/epe_px"])
    backward, backward_zero = dict(run_["val/epe_px_backward"]), dict(run_["val/true_flow_px_backward"])
    return [(step, (forward[step] + backward[step]) / (run_["zero_flow_epe_px"] + backward_zero[step]))
            for step in sorted(set(forward) & set(backward))]


def train_variant(name: str, config: PretrainConfig, threads: int) -> dict:
    """One pretraining run; returns its validation and loss curves and wall time."""
    import torch

    torch.set_num_threads(threads)
    started = time.perf_counter()
    pretrain(config)
    log = config.run_dir / "log.jsonl"
    return {"variant": name, "minutes": (time.perf_counter() - started) / 60, "loss": curve(log, "loss"),
            **{key: curve(log, key) for key in KEYS}}


def world_training_shards(out: Path, args, width: int, height: int, gap_curriculum: bool) -> Path:
    """World drives with their samples at the training size (triplets at --fps; with `gap_curriculum`
    runs of 5 frames at twice the rate, so pairs 2 apart move as far as neighbours at --fps)."""
    rate, frames = (2 * args.fps, 5) if gap_curriculum else (args.fps, 3)
    write_world_shards(out, args.drives, args.samples, 300, width_px=width, height_px=height, frame_rate_hz=rate,
                       workers=os.cpu_count() or 1, frames_per_sample=frames)
    return out


def mined_training_shards(work: Path, args, width: int, gap_curriculum: bool) -> Path:
    """World videos (rendered at 10 fps, wide enough for `width`) served on 127.0.0.1 and mined by
    `geopt-mine download` and `shard` at --fps: what pretraining sees from internet video, with its JPEG,
    letterbox crop and the miner's choice of frames. Samples of 3 frames (5 at twice the rate for
    `gap_curriculum`); the mining table goes to work/commands.log."""
    videos, log = work / "videos", work / "commands.log"
    work.mkdir(parents=True, exist_ok=True)
    video_w = max(320, 2 * math.ceil(width / 2))
    video_h, content_h = 2 * round(video_w * 9 / 32), 2 * round(video_w * 0.45 / 2)
    rate, frames = (2 * args.fps, 5) if gap_curriculum else (args.fps, 3)
    run(["world.cli", "render", "--out", str(videos), "--videos", str(args.videos), "--duration", str(args.video_s),
         "--fps", "10" if rate <= 10 else "30", "--size", f"{video_w}x{video_h}", "--content-height", str(content_h),
         "--seed", "300", "--workers", str(os.cpu_count() or 1)], log)
    server, base = serve(videos)
    try:
        urls = work / "urls.txt"
        urls.write_text("".join(f"{base}/{p.name}\n" for p in sorted(videos.glob("*.mp4"))))
        run(["mining.cli", "download", "--list", str(urls), "--downloads", str(work / "downloads")], log)
        run(["mining.cli", "shard", "--in", str(work / "downloads"), "--out", str(work / "shards"), "--width",
             str(video_w), "--fps", f"{rate:g}", "--frames", str(frames), "--val-fraction", "0",
             "--workers", str(max(2, os.cpu_count() or 1))], log)
    finally:
        server.shutdown()
    return work / "shards"


def sample_count(shards: Path) -> int:
    """Samples in a folder's shards (each has one .json member)."""
    count = 0
    for path in sorted(shards.glob("*.tar")):
        with tarfile.open(path) as tar:
            count += sum(1 for member in tar.getmembers() if member.name.endswith(".json"))
    return count


def steps_to(curve_points: list[tuple[int, float]], level: float) -> int | None:
    """The first validation step at or below `level`, or None."""
    return next((step for step, value in curve_points if value <= level), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="800",
                        help="pretraining steps per run; a comma list gives each --size its own (default: %(default)s)")
    parser.add_argument("--size", default="320x96",
                        help="training size WIDTHxHEIGHT, multiples of 32; several separated by commas each get "
                             "every variant (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=5.0,
                        help="frame rate of the training pairs; halving it doubles displacements (default: %(default)s)")
    parser.add_argument("--data", choices=("world", "mined"), default="world",
                        help="world: world drives written straight to shards at the training size; mined: world "
                             "videos served on 127.0.0.1 and mined by geopt-mine (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=6e-4, help="peak learning rate for a batch of 8 (default: %(default)s)")
    parser.add_argument("--drives", type=int, default=8, help="training drives for --data world (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=30,
                        help="samples per training drive for --data world (default: %(default)s)")
    parser.add_argument("--videos", type=int, default=8, help="videos for --data mined (default: %(default)s)")
    parser.add_argument("--video-s", type=float, default=20.0,
                        help="driving seconds per video for --data mined (default: %(default)s)")
    parser.add_argument("--variants", default="default",
                        help=f"comma list of {', '.join(VARIANTS)} (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the nets' initialisation and of the order and augmentation of the training "
                             "pairs; the drives stay the same (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="loader processes per run (default: %(default)s)")
    parser.add_argument("--keep-runs", action="store_true",
                        help="keep each run's folder (config, log, last.pt) and the validation shards under "
                             "OUT/runs, to look at the trained nets afterwards")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "flow_learning",
                        help="where flow_learning.json and the curves go (default: %(default)s)")
    args = parser.parse_args()
    from training.options import parse_size
    from training.flow.data import DataConfig

    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    try:
        sizes = {size: parse_size(size) for size in args.size.split(",")}
    except ValueError as error:
        sys.exit(f"--size {args.size}: {error}")
    steps = [int(s) for s in args.steps.split(",")]
    if len(steps) not in (1, len(sizes)):
        sys.exit(f"--steps {args.steps}: give one count, or one per --size ({len(sizes)})")
    steps_of = dict(zip(sizes, steps * len(sizes) if len(steps) == 1 else steps))
    gap = any(VARIANTS[n].short_gap_share for n in names)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        zero, configs = {}, []
        if args.data == "mined":
            shards = mined_training_shards(tmp / "mined", args, max(w for w, _ in sizes.values()), gap)
        for size, (width, height) in sizes.items():
            runs_root = args.out / "runs" if args.keep_runs else tmp
            val = runs_root / size / "val"
            write_world_shards(val, 2, 10, 7000, width_px=width, height_px=height, frame_rate_hz=args.fps,
                               workers=os.cpu_count() or 1)
            zero[size] = zero_flow_epe_px(val, size)
            print(f"{size} at {args.fps:g} Hz: predicting no motion scores EPE {zero[size]:.2f} px on the unseen "
                  "drives", flush=True)
            if args.data == "world":
                shards = world_training_shards(tmp / size / "train", args, width, height, gap)
            train_samples = sample_count(shards)
            if train_samples < args.batch_size:
                sys.exit(f"{size} at {args.fps:g} Hz gives {train_samples} training samples, fewer than one batch "
                         f"of {args.batch_size}: give more --drives/--samples or --videos/--video-s")
            run_steps = steps_of[size]
            for name in names:
                variant = VARIANTS[name]
                config = PretrainConfig(
                    data=DataConfig(shards=str(shards / "*.tar"), width_px=width, height_px=height,
                                    batch_size=args.batch_size, workers=args.workers, seed=args.seed),
                    run_dir=runs_root / size / name, val_shards=str(val), steps=run_steps,
                    warmup_steps=max(1, run_steps // 20), val_every=max(1, run_steps // 8),
                    log_every=max(1, run_steps // 40), checkpoint_every=10**9, image_every=10**9,
                    device=args.device, lr=args.lr, loss=variant.loss, seed=args.seed,
                    half_size_steps=round(variant.half_size_share * run_steps),
                    film_starts_identity=variant.film_starts_identity, coarse_to_fine=variant.coarse_to_fine,
                    motion_head=variant.motion_head, antisymmetric=variant.antisymmetric,
                    rigid_flow=variant.rigid_flow, flow_decoder=variant.flow_decoder, stretch=variant.stretch)
                if variant.short_gap_share:
                    gap_steps = round(variant.short_gap_share * run_steps)
                    config = replace(config, short_gap_steps=gap_steps,
                                     data=replace(config.data, frame_gap=2, batches_per_epoch=gap_steps))
                elif gap:  # the same 5-frame samples, pairs 2 apart from the start
                    config = replace(config, data=replace(config.data, frame_gap=2))
                configs.append((f"{name}@{size}" if len(sizes) > 1 else name, config,
                                max(1, (os.cpu_count() or 1) // args.jobs)))
        # Not a multiprocessing.Pool: its daemonic workers may not start the runs' loader processes.
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(train_variant, *zip(*configs)))
    for run_, (_, config, _) in zip(runs, configs):
        size = f"{config.data.width_px}x{config.data.height_px}"
        run_["size"], run_["zero_flow_epe_px"] = size, zero[size]
        run_["steps_to_half_zero"] = steps_to(run_["val/epe_px"], 0.5 * zero[size])
        epe, two_way = run_["val/epe_px"], both_ways(run_)
        run_["both_ways_epe_over_zero"] = two_way
        last = {k: run_[k][-1][1] for k in KEYS if run_[k]}
        print(f"{run_['variant']:>28}: EPE " + " -> ".join(f"{e:.2f}" for _, e in epe) + " px at steps "
              + ", ".join(str(s) for s, _ in epe) + "; EPE/zero " + " -> ".join(f"{e / zero[size]:.2f}" for _, e in epe)
              + f"; last: EPE/zero {last['val/epe_px'] / zero[size]:.2f}, flow "
              f"{last['val/flow_px']:.1f} px vs true {last['val/true_flow_px']:.1f} (for a still pair "
              f"{last.get('val/flow_px_same_frames', float('nan')):.1f}), excluded "
              f"{last['val/excluded']:.1%}; pixels whose true match stays in view: EPE/zero "
              f"{last.get('val/epe_px_in_view', float('nan')) / last.get('val/true_flow_px_in_view', float('nan')):.2f}"
              f"; coarse scales 1/2, 1/4, 1/8 upsampled: EPE/zero "
              + ", ".join(f"{last[f'val/epe_px_s{s}'] / zero[size]:.2f}" for s in (1, 2, 3) if f"val/epe_px_s{s}" in last)
              + (f"; backward (middle -> previous frame): EPE/zero {last['val/epe_px_backward'] / last['val/true_flow_px_backward']:.2f}"
                 f", flow {last['val/flow_px_backward']:.1f} px vs true {last['val/true_flow_px_backward']:.1f}; both ways: "
                 "EPE/zero " + " -> ".join(f"{e:.2f}" for _, e in two_way) if two_way else "")
              + f"; 0.5x zero flow at step {run_['steps_to_half_zero']} "
              f"({run_['minutes']:.1f} min)", flush=True)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    (args.out / "flow_learning.json").write_text(json.dumps({"settings": settings, "zero_flow_epe_px": zero,
                                                              "runs": runs}, indent=1))
    tag = f"{args.size}@{args.fps:g}Hz, {args.data}"
    curves = {r["variant"]: [(s, v / r["zero_flow_epe_px"]) for s, v in r["val/epe_px"]] for r in runs}
    curves.update({f"{r['variant']}, both ways": r["both_ways_epe_over_zero"] for r in runs if r["both_ways_epe_over_zero"]})
    plot_curves(curves, args.out / "flow_learning_epe.png", f"validation EPE / zero-flow EPE, {tag}", reference=1.0)
    plot_curves({r["variant"]: r["loss"] for r in runs}, args.out / "flow_learning_loss.png", f"training loss, {tag}")
    print(f"wrote {args.out}/flow_learning.json, flow_learning_epe.png, flow_learning_loss.png")


if __name__ == "__main__":
    main()
