"""The seed's claim, closed on the world: does geometric pretraining on mined video beat training depth
from scratch (and ImageNet init, when its weights are in the local torch cache) at equal budget?

    python bench/geopt_vs_scratch.py --budget tiny  # ~1.5 min on 2 cores: the CI check that the loop closes
    python bench/geopt_vs_scratch.py --quick        # ~12 min on 2 cores, small budget, no claim made
    python bench/geopt_vs_scratch.py --budget medium  # ~1 h on 2 cores: what this CPU machine can afford
    python bench/geopt_vs_scratch.py                # the real run (hours on a CPU; minutes on a GPU)

Every step goes through the user's commands: `geopt-world` renders internet-like videos and a KITTI-style
tree (its test drives are never mined nor trained on), the videos are served on 127.0.0.1 and mined by
`geopt-mine download` and `shard`, `geopt-train pretrain` + `export` make the GeoPt backbone, `geopt-train transfer` (M mode)
trains depth from each init with the same budget on all and on 10 % of the training split (few-shot),
and `geopt-train evaluate` scores each on the Eigen-style test split. Writes the table (results.md), every
score and timing (results.json), learning curves and depth pictures under --out (default docs/) and prints
the table.
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
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from geopt_io import read_jsonl, write_bytes_atomic, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ERRORS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
HEADER = ("Abs Rel", "Sq Rel", "RMSE", "RMSE log", "δ<1.25", "δ<1.25²", "δ<1.25³")


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
    """Network input size for pretraining and transfer (multiples of 32)."""
    batch_size: int = 4
    pretrain_lr: float = 6e-4
    """Peak pretraining learning rate for a batch of 8 (3x the CLI default: short CPU budgets need it to
    leave the zero-flow plateau, `bench/flow_learning.py --lr 6e-4`)."""
    video_size: str = "640x360"
    video_content_height_px: int = 288
    mine_width_px: int = 640
    kitti_size: str = "640x192"


TINY = Budget(videos=2, video_s=3.0, pretrain_steps=2, transfer_steps=2, train_drives=2, test_drives=1,
              frames_per_drive=6, size="128x64", batch_size=2, video_size="320x180", video_content_height_px=144,
              mine_width_px=256, kitti_size="320x96")
QUICK = Budget(videos=3, video_s=8.0, pretrain_steps=50, transfer_steps=30, train_drives=4, test_drives=2,
               frames_per_drive=24)
MEDIUM = Budget(videos=6, video_s=15.0, pretrain_steps=500, transfer_steps=120, train_drives=6, test_drives=2,
                frames_per_drive=40, video_size="480x270", video_content_height_px=216, mine_width_px=320)
FULL = Budget(videos=12, video_s=30.0, pretrain_steps=3000, transfer_steps=1500, train_drives=12, test_drives=4,
              frames_per_drive=60)
BUDGETS = {"tiny": TINY, "quick": QUICK, "medium": MEDIUM, "full": FULL}


def run(command: list[str], log: Path) -> None:
    """Run a GeoPt command (its full output appended to `log`), print what it made (its last line) and its
    wall time, and stop with its tail if it fails.

    OpenMP threads sleep instead of spinning while they wait (unless the caller's environment says otherwise):
    spinning threads made each training step ~5x slower whenever another job shared the cores."""
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONPATH": str(ROOT)}
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
    print(f"  {name.replace('world', 'geopt-world')} {command[1]} ({time.perf_counter() - started_s:.0f} s): "
          f"{lines[-1] if lines else 'done'}", flush=True)


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
    from training.cli import parse_size
    from training.data import DataConfig, val_loader

    width, height = parse_size(size)
    total, count = 0.0, 0
    for _, _, flow in val_loader(DataConfig(shards=str(shards), width_px=width, height_px=height, batch_size=8)):
        total += float(flow.norm(dim=1).mean()) * flow.shape[0]
        count += flow.shape[0]
    return total / count


def plot_curves(curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """Training loss against step for every run, drawn with OpenCV (no plotting library needed)."""
    width, height, margin = 800, 420, 50
    canvas = np.full((height, width, 3), 255, np.uint8)
    points = [p for c in curves.values() for p in c]
    if not points:
        return
    max_step = max(p[0] for p in points)
    low, high = min(p[1] for p in points), max(p[1] for p in points)
    colours = [(200, 80, 30), (30, 30, 200), (40, 160, 40), (150, 40, 150), (0, 140, 200), (90, 90, 90)]
    cv2.rectangle(canvas, (margin, margin // 2), (width - margin // 2, height - margin), (0, 0, 0), 1)
    for i, (name, points_i) in enumerate(curves.items()):
        xy = np.array([[margin + (s / max_step) * (width - 1.5 * margin),
                        height - margin - (v - low) / max(high - low, 1e-9) * (height - 1.5 * margin)]
                       for s, v in points_i], np.int32)
        cv2.polylines(canvas, [xy], False, colours[i % len(colours)], 2, cv2.LINE_AA)
        cv2.putText(canvas, name, (margin + 10, margin + 18 * i + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    colours[i % len(colours)], 1, cv2.LINE_AA)
    cv2.putText(canvas, f"training loss vs step (0..{max_step}); {low:.3f}..{high:.3f}", (margin, height - 15),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), canvas)


def depth_figure(kitti: Path, predictions: dict[str, Path], path: Path, count: int = 3) -> None:
    """Rows: test images, then each model's predicted disparity (brighter = nearer)."""
    from training.kitti import image_path, read_split_file

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


def table(results: dict[str, dict]) -> str:
    lines = ["| init | training data | " + " | ".join(HEADER) + " |", "|---|---|" + "---|" * len(HEADER)]
    for name, errors in results.items():
        init, fraction = name.split("@")
        lines.append(f"| {init} | {fraction} | " + " | ".join(f"{errors[k]:.3f}" for k in ERRORS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=BUDGETS, default="full",
                        help="tiny: ~1.5 min on 2 cores, checks that the loop closes (CI); quick: ~12 min on 2 cores, "
                             "no claim made; medium: ~1 h on 2 cores; full: the real run (default: %(default)s)")
    parser.add_argument("--quick", dest="budget", action="store_const", const="quick", help="same as --budget quick")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "experiment",
                        help="working folder; a previous run of this experiment in it is deleted first "
                             "(default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs",
                        help="where results.md, results.json and the figures go (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    args = parser.parse_args()
    budget = BUDGETS[args.budget]
    work, out = args.work, args.out
    if work.exists() and any(work.iterdir()) and not (work / "commands.log").is_file():
        sys.exit(f"{work} holds files this experiment did not make; choose another --work")
    shutil.rmtree(work, ignore_errors=True)  # a previous run of this experiment: start clean
    work.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    timings, started = {}, time.perf_counter()

    def phase(name: str):
        timings[name] = time.perf_counter()

    phase("world")
    run(["world.cli", "kitti", "--out", str(work / "kitti"), "--train-drives", str(budget.train_drives),
         "--test-drives", str(budget.test_drives), "--frames", str(budget.frames_per_drive),
         "--size", budget.kitti_size, "--seed", "9000"], log)
    run(["world.cli", "render", "--out", str(work / "videos"), "--videos", str(budget.videos), "--duration",
         str(budget.video_s), "--size", budget.video_size, "--content-height", str(budget.video_content_height_px),
         "--seed", "100"], log)
    run(["world.cli", "shards", "--out", str(work / "flow_val"), "--drives", "1", "--samples",
         str(max(4, min(20, budget.frames_per_drive // 2))), "--size", budget.kitti_size, "--seed", "7000"], log)
    phase("mining")
    server, base = serve(work / "videos")
    try:
        urls = work / "urls.txt"
        urls.write_text("".join(f"{base}/{p.name}\n" for p in sorted((work / "videos").glob("*.mp4"))))
        run(["mining.cli", "download", "--list", str(urls), "--downloads", str(work / "downloads")], log)
        run(["mining.cli", "shard", "--in", str(work / "downloads"), "--out", str(work / "shards"),
             "--width", str(budget.mine_width_px), "--workers", "2"], log)
    finally:
        server.shutdown()
    phase("pretrain")
    common = ["--device", args.device, "--size", budget.size, "--batch-size", str(budget.batch_size)]
    run(["training.cli", "pretrain", "--shards", str(work / "shards" / "<0000..0999>.tar"),
         "--run-dir", str(work / "pretrain"), "--steps", str(budget.pretrain_steps), "--workers", "1",
         "--lr", str(budget.pretrain_lr),
         "--warmup-steps", str(max(1, budget.pretrain_steps // 20)), "--val-shards", str(work / "flow_val"),
         "--val-every", str(max(1, budget.pretrain_steps // 5)), *common], log)
    flow_epe = curve(work / "pretrain" / "log.jsonl", "val/epe_px")
    zero_epe = zero_flow_epe_px(work / "flow_val", budget.size)
    run(["training.cli", "export", "--ckpt", str(work / "pretrain" / "last.pt"), "--out", str(work / "backbone.pth")],
        log)
    phase("transfer")
    inits = {"geopt": f"geopt:{work / 'backbone.pth'}", "scratch": "scratch"}
    if imagenet_cached():
        inits["imagenet"] = "imagenet"
    results, curves, predictions = {}, {}, {}
    transfer_log_every = max(1, min(5, budget.transfer_steps // 10))
    for fraction in (1.0, 0.1):
        for name, init in inits.items():
            key = f"{name}@{'all' if fraction == 1.0 else '10%'}"
            run_dir = work / "transfer" / key.replace("@", "_").replace("%", "pc")
            run(["training.cli", "transfer", "--data", f"kitti:{work / 'kitti'}", "--split", "eigen_zhou",
                 "--mode", "M", "--init", init, "--run-dir", str(run_dir), "--steps", str(budget.transfer_steps),
                 "--train-fraction", str(fraction), "--workers", "1", "--log-every", str(transfer_log_every),
                 "--seed", "0", *common], log)
            scores = work / f"{run_dir.name}.json"
            run(["training.cli", "evaluate", "--data", f"kitti:{work / 'kitti'}", "--split", "eigen",
                 "--ckpt", str(run_dir / "last.pt"), "--device", args.device, "--out", str(scores)], log)
            results[key] = json.loads(scores.read_text())["errors"]
            curves[key] = curve(run_dir / "log.jsonl")
            if fraction == 1.0:
                predictions[name] = work / "predictions" / name
                run(["training.cli", "predict", "--ckpt", str(run_dir / "last.pt"), "--data", f"kitti:{work / 'kitti'}",
                     "--split", "eigen", "--save-npy", "--device", args.device, "--out", str(predictions[name])],
                    log)
    phase("end")
    minutes = {name: (timings[nxt] - timings[name]) / 60 for name, nxt in
               zip(["world", "mining", "pretrain", "transfer"], ["mining", "pretrain", "transfer", "end"])}
    total_min = (time.perf_counter() - started) / 60
    plot_curves(curves, out / "learning_curves.png")
    depth_figure(work / "kitti", predictions, out / "depth_examples.png")
    gains = []
    for fraction in ("all", "10%"):
        geopt, scratch = results[f"geopt@{fraction}"]["abs_rel"], results[f"scratch@{fraction}"]["abs_rel"]
        gains.append(f"GeoPt vs scratch Abs Rel on {fraction} of the data: {geopt:.3f} vs {scratch:.3f} "
                     f"({(scratch - geopt) / scratch:+.1%})")
    mode = {"tiny": "--budget tiny (a check that the loop closes: no claim is made from these numbers)",
            "quick": "--quick (small budget: no claim is made from these numbers)",
            "medium": "--budget medium (about an hour on 2 CPU cores)", "full": "full budget"}[args.budget]
    flag = {"tiny": " --budget tiny", "quick": " --quick", "medium": " --budget medium", "full": ""}[args.budget]
    date = time.strftime("%Y-%m-%d")
    report = "\n".join([
        f"# GeoPt vs scratch on the world ({mode})", "",
        f"Command: `python bench/geopt_vs_scratch.py{flag}` "
        f"({date}, {os.cpu_count()} CPU cores, device {args.device}).", "",
        f"Budget: {budget.videos} mined videos of {budget.video_s:.0f} s, pretraining {budget.pretrain_steps} steps, "
        f"depth transfer (M mode) {budget.transfer_steps} steps per run at {budget.size}, batch {budget.batch_size}; "
        f"{budget.train_drives} training drives and {budget.test_drives} unseen test drives of "
        f"{budget.frames_per_drive} frames.", "",
        table(results), "", *[f"- {g}" for g in gains],
        f"- Pretraining, flow end-point error on an unseen world drive (true flow, {budget.size} pixels): "
        + " → ".join(f"{e:.2f}" for _, e in flow_epe) + f" px at steps {', '.join(str(s) for s, _ in flow_epe)}; "
        f"predicting no motion scores {zero_epe:.2f} px.", "",
        "Time: " + ", ".join(f"{k} {v:.1f} min" for k, v in minutes.items()) + f"; total {total_min:.1f} min.", "",
        "![learning curves](learning_curves.png)", "", "![depth examples](depth_examples.png)", ""])
    write_bytes_atomic(out / "results.md", report.encode())
    write_json_atomic(out / "results.json", {
        "command": f"python bench/geopt_vs_scratch.py{flag}", "budget_name": args.budget, "budget": asdict(budget),
        "date": date, "cpu_count": os.cpu_count(), "device": args.device, "errors": results,
        "pretrain_val_epe_px": flow_epe, "zero_flow_epe_px": zero_epe,
        "minutes": {**minutes, "total": total_min}})
    print(report)


if __name__ == "__main__":
    main()
