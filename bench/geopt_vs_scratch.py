"""The seed's claim, closed on the world: does geometric pretraining on mined video beat training depth
from scratch (and ImageNet init, when its weights are in the local torch cache) at equal budget?

    python bench/geopt_vs_scratch.py --budget tiny    # ~2 min on 2 cores: the CI check that the loop closes
    python bench/geopt_vs_scratch.py --quick          # ~10 min on 2 cores, small budget, no claim made
    python bench/geopt_vs_scratch.py --budget medium  # ~1 h on 2 cores: what a CPU machine can afford
    python bench/geopt_vs_scratch.py --budget verdict # ~50 min on 2 cores: at a size where pretraining learns,
                                                      # 3 seeds, frozen-encoder probe, highway generalisation
    python bench/geopt_vs_scratch.py --budget gpu     # one GPU command (~9 min on one H200 with 16 cores)
    python bench/geopt_vs_scratch.py                  # the full budget (hours on a CPU)

Every step goes through the user's commands: `geopt-world` renders internet-like videos and a KITTI-style
tree (its test drives are never mined nor trained on), the videos are served on 127.0.0.1 and mined by
`geopt-mine download` and `shard`, `geopt-train pretrain` + `export` make the GeoPt backbone, `geopt-train
transfer` (M mode) trains depth from each init with the same budget on all and on 10 % of the training split
(few-shot), once per seed, and `geopt-train evaluate` scores each on the Eigen-style test split (and, where the budget has
one, on test drives of another kind: the generalisation column). A budget with a probe also trains only the
depth decoder and pose network on each frozen encoder (`--freeze-encoder`). Runs that do
not depend on each other run side by side (`Budget.parallel_runs`; a GPU has room for several). Writes the
table (results.md: the mean over seeds and their spread), every score and timing (results.json), learning
curves and depth pictures under --out (default docs/) and prints the table.
"""
import argparse
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from formats.files import read_jsonl, write_bytes_atomic, write_json_atomic  # noqa: E402
from training.depth.collapse import collapse_verdict  # noqa: E402

ERRORS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
HEADER = ("Abs Rel", "Sq Rel", "RMSE", "RMSE log", "δ<1.25", "δ<1.25²", "δ<1.25³")
FRACTIONS = {"all": 1.0, "10%": 0.1}


@dataclass(frozen=True)
class Budget:
    """Everything that sets the experiment's size; sizes are WIDTHxHEIGHT in pixels."""
    videos: int
    video_s: float
    pretrain_steps: int
    transfer_steps: int
    train_drives: int
    test_drives: int
    frames_per_drive: int
    size: str = "320x96"
    """Network input size for transfer (multiples of 32); pretraining uses `pretrain_size`."""
    pretrain_size: str = "320x96"
    batch_size: int = 4
    pretrain_batch_size: int = 4
    pretrain_lr: float = 6e-4
    """Peak pretraining learning rate for a batch of 8 (3x the CLI default: short budgets need it to leave
    the zero-flow plateau, `bench/flow_learning.py`)."""
    video_size: str = "640x360"
    video_content_height_px: int = 288
    video_fps: str = "30"
    """Frame rate the world renders the videos at (`geopt-world render --fps`); mining takes 10 frames a
    second whatever it is, so 10 renders a third of the frames for the same shards."""
    mine_width_px: int = 640
    kitti_size: str = "640x192"
    seeds: tuple[int, ...] = (0,)
    """Each transfer run is repeated once per seed; the table shows the mean and the spread."""
    workers: int = 1
    """Processes for rendering and mining, and loader processes of pretraining."""
    parallel_runs: int = 1
    """Transfer runs (with their evaluations) going on at once."""
    transfer_options: tuple[str, ...] = ()
    """Further `geopt-train transfer` options, the same for every arm (the recipe: `bench/transfer_collapse.py`)."""
    probe: bool = False
    """Also a frozen-encoder depth probe of every init on all the data (`--freeze-encoder`)."""
    generalisation_kind: str | None = None
    """Also score every run on test drives of this kind (`geopt-world kitti --test-kind`), never trained on."""
    cuda: bool = False
    """Needs a CUDA GPU (exits with one line on a machine without)."""


TINY = Budget(videos=2, video_s=3.0, pretrain_steps=2, transfer_steps=2, train_drives=2, test_drives=1,
              frames_per_drive=6, size="128x64", pretrain_size="128x64", batch_size=2, pretrain_batch_size=2,
              video_size="320x180", video_content_height_px=144, mine_width_px=256, kitti_size="320x96",
              seeds=(0, 1), workers=2, parallel_runs=2,
              transfer_options=("--recipe", "stable"), probe=True, generalisation_kind="highway")
QUICK = Budget(videos=3, video_s=8.0, pretrain_steps=50, transfer_steps=80, train_drives=4, test_drives=2,
               frames_per_drive=24, size="192x64", transfer_options=("--recipe", "stable"))
"""`./geopt demo`: transfers long enough, with the stable recipe, to show depth a person recognises."""
MEDIUM = Budget(videos=6, video_s=15.0, pretrain_steps=500, transfer_steps=120, train_drives=6, test_drives=2,
                frames_per_drive=40, video_size="480x270", video_content_height_px=216, mine_width_px=320)
GPU = Budget(videos=24, video_s=20.0, pretrain_steps=1500, transfer_steps=300, train_drives=16, test_drives=4,
             frames_per_drive=60, size="640x192", pretrain_size="640x192", batch_size=12, pretrain_batch_size=16,
             video_fps="10", seeds=(0, 1), workers=14, parallel_runs=4, cuda=True,
             transfer_options=("--recipe", "stable"))
"""Sized from the H200 run of 2026-12-04 (main 8ca03a4) to fit one 9-minute command: there the world took
274 s (rendering 24 videos at 30 fps 244 s), mining 16 s, pretraining and export 206 s, and four 500-step
transfers side by side 161 s. Rendering at 10 fps (what mining keeps anyway) should cut the world to about
110 s, and 8 transfers of 300 steps with the stable recipe, four at a time, take about 200 s; not yet
run on a GPU."""
VERDICT = Budget(videos=8, video_s=20.0, pretrain_steps=1200, transfer_steps=200, train_drives=4, test_drives=2,
                 frames_per_drive=30, size="128x64", pretrain_size="192x64", pretrain_batch_size=16,
                 video_size="480x270", video_content_height_px=216, video_fps="10", mine_width_px=320,
                 kitti_size="320x96", seeds=(0, 1, 2), workers=2, parallel_runs=2,
                 transfer_options=("--recipe", "stable"),
                 probe=True, generalisation_kind="highway")
"""Issue 22's closed loop on 2 CPU cores: pretraining at 192x64 and 10 Hz, where world shards teach flow
(`bench/flow_learning.py`; mined video did not, 2026-12-04), transfers with the stable recipe (`geopt-train transfer --recipe stable`: the same
pose network in every arm, warm-up, auto-masking from step 60), 3 seeds, the probe, and highway test drives."""
FULL = Budget(videos=12, video_s=30.0, pretrain_steps=3000, transfer_steps=1500, train_drives=12, test_drives=4,
              frames_per_drive=60)
BUDGETS = {"tiny": TINY, "quick": QUICK, "medium": MEDIUM, "verdict": VERDICT, "gpu": GPU, "full": FULL}
FLAGS = {"tiny": " --budget tiny", "quick": " --quick", "medium": " --budget medium", "verdict": " --budget verdict",
         "gpu": " --budget gpu", "full": ""}


def run(command: list[str], log: Path, env: dict | None = None) -> str:
    """Run a GeoPt command (its whole output appended to `log`), print what it made (its last line) and its
    wall time, and stop with its tail if it fails. Returns that last line.

    OpenMP threads sleep instead of spinning while they wait (unless the caller's environment says otherwise):
    spinning threads made each training step ~5x slower whenever another job shared the cores. The
    repository goes first on PYTHONPATH, before what the caller had there (on a GPU image, the carried
    wheels of `bench/gpu_check.sh`)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONPATH": path, **(env or {})}
    start, started_s = log.stat().st_size if log.exists() else 0, time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    output = log.read_bytes()[start:].decode(errors="replace")
    lines = [line for line in output.replace("\r", "\n").splitlines() if line.strip() and "/s]" not in line]
    if done.returncode:
        sys.exit(f"failed: {' '.join(command)}\n" + "\n".join(lines[-20:]))
    name = command[0].split(".")[0].replace("training", "geopt-train").replace("mining", "geopt-mine")
    last = lines[-1] if lines else "done"
    print(f"  {name.replace('world', 'geopt-world')} {command[1]} ({time.perf_counter() - started_s:.0f} s): {last}",
          flush=True)
    return last


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that hangs up early (yt-dlp does while probing) is normal here, not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = _QuietServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def imagenet_cached() -> bool:
    import torch
    return any((Path(torch.hub.get_dir()) / "checkpoints").glob("resnet18-*.pth"))


def curve(log_path: Path, key: str = "loss") -> list[tuple[int, float]]:
    """(step, value) of every row of a run's log.jsonl that has `key`."""
    return [(r["step"], r[key]) for r in read_jsonl(log_path) if key in r]


def zero_flow_epe_px(shards: Path, size: str) -> float:
    """End-point error of predicting no motion at all on the validation shards, in training pixels: the
    score a flow model must beat to have learned anything."""
    from training.options import parse_size
    from training.flow.data import DataConfig, val_loader

    width, height = parse_size(size)
    total, count = 0.0, 0
    for batch in val_loader(DataConfig(shards=str(shards), width_px=width, height_px=height, batch_size=8)):
        total += float(batch.true_flow.norm(dim=1).mean()) * len(batch.true_flow)
        count += len(batch.true_flow)
    return total / count


def plot_curves(curves: dict[str, list[tuple[int, float]]], path: Path, label: str = "training loss",
                reference: float | None = None) -> None:
    """Value against step for every run, drawn with OpenCV (no plotting library needed); `reference`
    draws a dashed level (e.g. the zero-flow score) for comparison."""
    width, height, margin = 800, 420, 50
    canvas = np.full((height, width, 3), 255, np.uint8)
    points = [p for c in curves.values() for p in c]
    if not points:
        return
    max_step = max(p[0] for p in points)
    values = [p[1] for p in points] + ([reference] if reference is not None else [])
    low, high = min(values), max(values)

    def y(value: float) -> int:
        return int(height - margin - (value - low) / max(high - low, 1e-9) * (height - 1.5 * margin))

    colours = [(200, 80, 30), (30, 30, 200), (40, 160, 40), (150, 40, 150), (0, 140, 200), (90, 90, 90)]
    cv2.rectangle(canvas, (margin, margin // 2), (width - margin // 2, height - margin), (0, 0, 0), 1)
    if reference is not None:
        for x in range(margin, width - margin // 2, 12):
            cv2.line(canvas, (x, y(reference)), (x + 6, y(reference)), (120, 120, 120), 1)
    for i, (name, points_i) in enumerate(curves.items()):
        xy = np.array([[margin + (s / max_step) * (width - 1.5 * margin), y(v)] for s, v in points_i], np.int32)
        cv2.polylines(canvas, [xy], False, colours[i % len(colours)], 2, cv2.LINE_AA)
        cv2.putText(canvas, name, (margin + 10, margin + 18 * i + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    colours[i % len(colours)], 1, cv2.LINE_AA)
    cv2.putText(canvas, f"{label} vs step (0..{max_step}); {low:.3f}..{high:.3f}", (margin, height - 15),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), canvas)


def depth_figure(kitti: Path, predictions: dict[str, Path], path: Path, count: int = 3) -> None:
    """Rows: test images, then each model's predicted disparity (brighter = nearer)."""
    from formats.kitti import image_path, read_split_file

    entries = read_split_file(kitti / "splits" / "eigen" / "test_files.txt")[:count]
    images = [cv2.imread(str(image_path(kitti, e))) for e in entries]
    h, w = images[0].shape[:2]
    rows = [np.concatenate(images, axis=1)]
    for name, folder in predictions.items():
        disps = np.load(folder / "disps.npy")[:count]
        tiles = []
        for disp in disps:
            scaled = cv2.resize(disp / np.percentile(disp, 95), (w, h)).clip(0, 1)
            tile = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)
            cv2.putText(tile, name, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        rows.append(np.concatenate(tiles, axis=1))
    cv2.imwrite(str(path), np.concatenate(rows, axis=0))


def mean_over_seeds(per_seed: dict[int, dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([errors[k] for errors in per_seed.values()])) for k in ERRORS}


def collapse_cells(verdicts: dict[int, dict]) -> str:
    """'k/n | steps': runs of an arm that ended in the no-motion state (`training.depth.collapse`), and per
    seed the step each left it ('-' for a run that ended in it)."""
    collapsed = sum(v["collapsed"] for v in verdicts.values())
    steps = ", ".join(str(v["left_no_motion_at_step"] or "-") for _, v in sorted(verdicts.items()))
    return f"{collapsed}/{len(verdicts)} | {steps}"


def abs_rel_cell(runs: dict[int, dict[str, float]]) -> str:
    """Mean Abs Rel over seeds, with several seeds ± half the range between them."""
    values = [errors["abs_rel"] for errors in runs.values()]
    spread = f" ± {(max(values) - min(values)) / 2:.3f}" if len(values) > 1 else ""
    return f"{np.mean(values):.3f}{spread}"


def table(per_seed: dict[str, dict[int, dict[str, float]]], collapse: dict[str, dict[int, dict]],
          other: dict[str, dict[int, dict[str, float]]] | None = None, other_kind: str | None = None) -> str:
    """Mean errors over seeds; with several seeds Abs Rel shows ± half the range between them. Then the
    arm's collapse rate and the step each seed's run left the no-motion state, and with `other` the Abs
    Rel on test drives of `other_kind`, never trained on (generalisation)."""
    extra = [f"Abs Rel, {other_kind} (never trained on)"] if other else []
    lines = ["| init | training data | " + " | ".join(HEADER + ("collapsed", "left no-motion at step", *extra)) + " |",
             "|---|---|" + "---|" * (len(HEADER) + 2 + len(extra))]
    for name, runs in per_seed.items():
        init, fraction = name.split("@")
        mean = mean_over_seeds(runs)
        cells = [abs_rel_cell(runs)] + [f"{mean[k]:.3f}" for k in ERRORS[1:]]
        tail = f" {abs_rel_cell(other[name])} |" if other else ""
        lines.append(f"| {init} | {fraction} | " + " | ".join(cells) + f" | {collapse_cells(collapse[name])} |" + tail)
    return "\n".join(lines)


# --- the phases ----------------------------------------------------------------------------------------

def make_world(budget: Budget, work: Path, log: Path) -> None:
    """The KITTI-style tree (train and unseen test drives), the internet-like videos, and world shards with
    true flow on which pretraining reports its end-point error."""
    workers = ["--workers", str(budget.workers)]
    run(["world.cli", "kitti", "--out", str(work / "kitti"), "--train-drives", str(budget.train_drives),
         "--test-drives", str(budget.test_drives), "--frames", str(budget.frames_per_drive),
         "--size", budget.kitti_size, "--seed", "9000", *workers], log)
    if budget.generalisation_kind:
        run(["world.cli", "kitti", "--out", str(work / f"kitti_{budget.generalisation_kind}"), "--train-drives", "1",
             "--test-drives", str(budget.test_drives), "--frames", str(budget.frames_per_drive), "--size",
             budget.kitti_size, "--seed", "9500", "--test-kind", budget.generalisation_kind, *workers], log)
    run(["world.cli", "render", "--out", str(work / "videos"), "--videos", str(budget.videos), "--duration",
         str(budget.video_s), "--size", budget.video_size, "--content-height", str(budget.video_content_height_px),
         "--fps", budget.video_fps,
         "--seed", "100", *workers], log)
    run(["world.cli", "shards", "--out", str(work / "flow_val"), "--drives", "2", "--samples",
         str(max(4, min(20, budget.frames_per_drive // 2))), "--size", budget.pretrain_size, "--seed", "7000",
         *workers], log)


def mine(budget: Budget, work: Path, log: Path) -> None:
    """Serve the videos on 127.0.0.1, download them with `geopt-mine download`, mine them into shards."""
    server, base = serve(work / "videos")
    try:
        urls = work / "urls.txt"
        urls.write_text("".join(f"{base}/{p.name}\n" for p in sorted((work / "videos").glob("*.mp4"))))
        run(["mining.cli", "download", "--list", str(urls), "--downloads", str(work / "downloads")], log)
        run(["mining.cli", "shard", "--in", str(work / "downloads"), "--out", str(work / "shards"),
             "--width", str(budget.mine_width_px), "--workers", str(max(2, budget.workers))], log)
    finally:
        server.shutdown()


def pretrain_backbone(budget: Budget, work: Path, log: Path, device: str) -> dict:
    """`geopt-train pretrain` on the mined shards and `export`; returns the validation EPE curve on world
    drives with true flow, the zero-flow score and the loss curve."""
    steps = budget.pretrain_steps
    run(["training.cli", "pretrain", "--shards", str(work / "shards" / "<0000..0999>.tar"),
         "--run-dir", str(work / "pretrain"), "--steps", str(steps), "--workers", str(min(budget.workers, 12)),
         "--lr", str(budget.pretrain_lr), "--warmup-steps", str(max(1, steps // 20)),
         "--val-shards", str(work / "flow_val"), "--val-every", str(max(1, steps // 5)),
         "--device", device, "--size", budget.pretrain_size, "--batch-size", str(budget.pretrain_batch_size)], log)
    run(["training.cli", "export", "--ckpt", str(work / "pretrain" / "last.pt"), "--out", str(work / "backbone.pth")],
        log)
    return {"epe": curve(work / "pretrain" / "log.jsonl", "val/epe_px"),
            "zero_epe": zero_flow_epe_px(work / "flow_val", budget.pretrain_size),
            "loss": curve(work / "pretrain" / "log.jsonl")}


def transfer_and_evaluate(budget: Budget, work: Path, log_dir: Path, device: str, name: str, init: str,
                          fraction: str, seed: int, probe: bool = False) -> tuple[dict, list, dict, dict | None]:
    """One `geopt-train transfer` run from `init` (with `probe`, on the frozen encoder), its `evaluate` on the
    test drives and, where the budget has them, on the test drives of another kind, and for the first seed
    of a fine-tuned arm on all data the `predict` of the test images into work/predictions/`name`; returns
    its errors, loss curve, collapse verdict ('collapsed', 'left_no_motion_at_step') and errors on the
    other kind (None without). Each run writes its own command log, so runs can go side by side."""
    run_dir = work / "transfer" / f"{name.replace(' ', '_')}_{fraction.replace('%', 'pc')}_seed{seed}"
    log = log_dir / f"{run_dir.name}.log"
    kitti = f"kitti:{work / 'kitti'}"
    threads = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // budget.parallel_runs))}
    run(["training.cli", "transfer", "--data", kitti, "--split", "eigen_zhou", "--mode", "M", "--init", init,
         "--run-dir", str(run_dir), "--steps", str(budget.transfer_steps), "--train-fraction",
         str(FRACTIONS[fraction]), "--workers", "1", "--log-every", str(max(1, min(5, budget.transfer_steps // 10))),
         "--seed", str(seed), "--device", device, "--size", budget.size, "--batch-size", str(budget.batch_size),
         *budget.transfer_options, *(["--freeze-encoder"] if probe else [])], log, env=threads)
    errors = {}
    trees = {"test": work / "kitti"}
    if budget.generalisation_kind:
        trees["other"] = work / f"kitti_{budget.generalisation_kind}"
    for key, tree in trees.items():
        scores = work / "scores" / f"{run_dir.name}_{key}.json"
        scores.parent.mkdir(exist_ok=True)
        run(["training.cli", "evaluate", "--data", f"kitti:{tree}", "--split", "eigen", "--ckpt",
             str(run_dir / "last.pt"), "--device", device, "--out", str(scores)], log, env=threads)
        errors[key] = json.loads(scores.read_text())["errors"]
    if fraction == "all" and seed == budget.seeds[0] and not probe:
        run(["training.cli", "predict", "--ckpt", str(run_dir / "last.pt"), "--data", kitti, "--split", "eigen",
             "--save-npy", "--device", device, "--out", str(work / "predictions" / name)], log, env=threads)
    verdict = collapse_verdict(read_jsonl(run_dir / "log.jsonl"))
    return (errors["test"], curve(run_dir / "log.jsonl"),
            {"collapsed": verdict.collapsed, "left_no_motion_at_step": verdict.left_no_motion_at_step},
            errors.get("other"))


def transfer_all(budget: Budget, work: Path, device: str) -> tuple[dict, dict, dict, dict, dict]:
    """Every init x training fraction x seed (and with a probe, every init's probe on all data),
    `parallel_runs` at a time. Returns the errors {'arm@fraction': {seed: errors}} (arms: 'geopt', 'scratch',
    'imagenet', 'geopt probe', ...), the first seed's loss curves, its prediction folders (all data), the
    collapse verdicts and the errors on the other kind's test drives (empty without), keyed alike."""
    inits = {"geopt": f"geopt:{work / 'backbone.pth'}", "scratch": "scratch"}
    if imagenet_cached():
        inits["imagenet"] = "imagenet"
    jobs = [(name, init, fraction, seed, False) for fraction in FRACTIONS for name, init in inits.items()
            for seed in budget.seeds]
    if budget.probe:
        jobs += [(f"{name} probe", init, "all", seed, True) for name, init in inits.items() for seed in budget.seeds]
    log_dir = work / "transfer_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(budget.parallel_runs) as pool:
        outcomes = pool.map(lambda job: transfer_and_evaluate(budget, work, log_dir, device, *job), jobs)
        per_seed, curves, collapse, other = {}, {}, {}, {}
        for (name, _, fraction, seed, _), (errors, loss, verdict, other_errors) in zip(jobs, outcomes):
            arm = f"{name}@{fraction}"
            per_seed.setdefault(arm, {})[seed] = errors
            collapse.setdefault(arm, {})[seed] = verdict
            if other_errors is not None:
                other.setdefault(arm, {})[seed] = other_errors
            if seed == budget.seeds[0]:
                curves[arm] = loss
    return per_seed, curves, {name: work / "predictions" / name for name in inits}, collapse, other


def gain_line(per_seed: dict, geopt: str, scratch: str, seeds: tuple[int, ...], what: str) -> str:
    """'GeoPt vs scratch Abs Rel on WHAT: a vs b (relative gain; per seed ...)' for two arms."""
    mean = {arm: float(np.mean([per_seed[arm][s]["abs_rel"] for s in seeds])) for arm in (geopt, scratch)}
    per_seed_gains = [(per_seed[scratch][s]["abs_rel"] - per_seed[geopt][s]["abs_rel"]) / per_seed[scratch][s]["abs_rel"]
                      for s in seeds]
    return (f"GeoPt vs scratch Abs Rel {what}: {mean[geopt]:.3f} vs {mean[scratch]:.3f} "
            f"({(mean[scratch] - mean[geopt]) / mean[scratch]:+.1%}; per seed "
            + ", ".join(f"{g:+.1%}" for g in per_seed_gains) + ")")


def write_report(budget: Budget, budget_name: str, device: str, out: Path, per_seed: dict, collapse: dict,
                 flow: dict, minutes: dict, other: dict | None = None) -> str:
    """results.md (table, gains, the pretraining's EPE line, times, pictures) and results.json; returns the
    markdown."""
    means = {name: mean_over_seeds(runs) for name, runs in per_seed.items()}
    other = other or {}
    gains = [gain_line(per_seed, f"geopt@{fraction}", f"scratch@{fraction}", budget.seeds, f"on {fraction} of the data")
             for fraction in FRACTIONS]
    if budget.probe:
        gains.append(gain_line(per_seed, "geopt probe@all", "scratch probe@all", budget.seeds,
                               "with the encoder frozen (probe)"))
    if other:
        gains.append(gain_line(other, "geopt@all", "scratch@all", budget.seeds,
                               f"on {budget.generalisation_kind} test drives never trained on (all data)"))
    mode = {"tiny": "--budget tiny (a check that the loop closes: no claim is made from these numbers)",
            "quick": "--quick (small budget: no claim is made from these numbers)",
            "medium": "--budget medium (about an hour on 2 CPU cores)",
            "verdict": "--budget verdict (the closed loop at a size where pretraining learns, 2 CPU cores)",
            "gpu": "--budget gpu (one GPU command)",
            "full": "full budget"}[budget_name]
    date = time.strftime("%Y-%m-%d")
    epe = flow["epe"]
    report = "\n".join([
        f"# GeoPt vs scratch on the world ({mode})", "",
        f"Command: `python bench/geopt_vs_scratch.py{FLAGS[budget_name]}` "
        f"({date}, {os.cpu_count()} CPU cores, device {device}).", "",
        f"- Pretraining, flow end-point error on unseen world drives (true flow, {budget.pretrain_size} pixels): "
        + " → ".join(f"{e:.2f}" for _, e in epe) + f" px at steps {', '.join(str(s) for s, _ in epe)}; "
        f"predicting no motion scores {flow['zero_epe']:.2f} px"
        + (f" (last: {epe[-1][1] / flow['zero_epe']:.2f}x)." if epe else "."),
        *[f"- {g}" for g in gains],
        *([] if budget.cuda or budget_name in ("full", "verdict") else [
            "- This budget makes no claim. Where the seed's claim stands, and the GPU command that tests it "
            "(`--budget gpu`): README.md, section 'Results on the world'."]), "",
        table(per_seed, collapse, other, budget.generalisation_kind), "",
        f"Budget: {budget.videos} mined videos of {budget.video_s:.0f} s, pretraining {budget.pretrain_steps} steps at "
        f"{budget.pretrain_size} (batch {budget.pretrain_batch_size}), depth transfer (M mode) "
        f"{budget.transfer_steps} steps per run at {budget.size} (batch {budget.batch_size}), seeds "
        f"{', '.join(map(str, budget.seeds))}; {budget.train_drives} training drives and {budget.test_drives} unseen "
        f"test drives of {budget.frames_per_drive} frames"
        + (f"; every arm's transfer: `{' '.join(budget.transfer_options)}`" if budget.transfer_options else "") + ".", "",
        "Time: " + ", ".join(f"{k} {v:.1f} min" for k, v in minutes.items() if k != "total")
        + f"; total {minutes['total']:.1f} min.", "",
        "![pretraining](pretraining_epe.png)", "", "![learning curves](learning_curves.png)", "",
        "![depth examples](depth_examples.png)", ""])
    write_bytes_atomic(out / "results.md", report.encode())
    write_json_atomic(out / "results.json", {
        "command": f"python bench/geopt_vs_scratch.py{FLAGS[budget_name]}", "budget_name": budget_name,
        "budget": asdict(budget), "date": date, "cpu_count": os.cpu_count(), "device": device, "errors": means,
        "errors_per_seed": per_seed, "collapse_per_seed": collapse,
        "generalisation_kind": budget.generalisation_kind, "generalisation_errors_per_seed": other,
        "pretrain_val_epe_px": epe, "zero_flow_epe_px": flow["zero_epe"],
        "minutes": minutes})
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=BUDGETS, default="full",
                        help="tiny: ~2 min on 2 cores, checks that the loop closes (CI); quick: ~10 min on 2 cores, "
                             "no claim made; medium: ~1 h on 2 cores; verdict: ~50 min on 2 cores, 3 seeds, probe, "
                             "generalisation; gpu: one GPU command of ~9 min; full: the "
                             "real run (default: %(default)s)")
    parser.add_argument("--quick", dest="budget", action="store_const", const="quick", help="same as --budget quick")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "experiment",
                        help="working folder; a previous run of this experiment in it is deleted first "
                             "(default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs",
                        help="where results.md, results.json and the figures go (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    args = parser.parse_args()
    budget = BUDGETS[args.budget]
    if budget.cuda:
        import torch
        if not torch.cuda.is_available() or args.device == "cpu":
            sys.exit(f"--budget {args.budget} needs a CUDA GPU and this machine has none "
                     "(use --budget tiny, quick, medium or full on a CPU)")
    work, out = args.work, args.out
    if work.exists() and any(work.iterdir()) and not (work / "commands.log").is_file():
        sys.exit(f"{work} holds files this experiment did not make; choose another --work")
    shutil.rmtree(work, ignore_errors=True)  # a previous run of this experiment: start clean
    work.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    started = time.perf_counter()
    marks = {}
    for phase, do in (("world", lambda: make_world(budget, work, log)), ("mining", lambda: mine(budget, work, log)),
                      ("pretrain", lambda: pretrain_backbone(budget, work, log, args.device)),
                      ("transfer", lambda: transfer_all(budget, work, args.device))):
        phase_started = time.perf_counter()
        marks[phase] = (do(), (time.perf_counter() - phase_started) / 60)
    flow = marks["pretrain"][0]
    per_seed, curves, predictions, collapse, other = marks["transfer"][0]
    minutes = {phase: value[1] for phase, value in marks.items()}
    minutes["total"] = (time.perf_counter() - started) / 60
    plot_curves(curves, out / "learning_curves.png", "depth transfer training loss")
    plot_curves({"pretraining": [(s, e / flow["zero_epe"]) for s, e in flow["epe"]]}, out / "pretraining_epe.png",
                "pretraining validation EPE / zero-flow EPE", reference=1.0)
    depth_figure(work / "kitti", predictions, out / "depth_examples.png")
    print(write_report(budget, args.budget, args.device, out, per_seed, collapse, flow, minutes, other))


if __name__ == "__main__":
    main()
