"""How often does the depth transfer collapse into the no-motion state, per init and per recipe?

    python bench/transfer_collapse.py                          # 8 seeds x 2 inits x 2 recipes, ~35 min on 2 idle cores
    python bench/transfer_collapse.py --backbone backbone.pth  # from a GeoPt backbone you made (skips pretraining)
    python bench/transfer_collapse.py --seeds 1 --steps 6 --pretrain-steps 4   # smoke, a few minutes
    python bench/transfer_collapse.py --resume                 # keeps the finished runs of a stopped one

Issue 22: on the H200, three of four short M transfers ended where the pose network predicts no motion
(`training.depth.collapse`), and the seed decided which init "won". This runs every seed from scratch and
from a GeoPt backbone (given, or made by a short pretraining on world shards at the transfer size), each
with Monodepth2's defaults and with the stabilised recipe (`RECIPES`, the same options for both inits),
at a CPU size, on a world KITTI-layout tree (`geopt-world kitti`) through the user's commands. For each
run: Abs Rel on the tree's unseen test drive (`geopt-train evaluate`), the auto-mask kept share at the
end, collapsed or not and the step it left the no-motion state (`collapse_verdict` of its log.jsonl);
per arm: the collapse rate. Writes results.md and results.json under --out and prints the table and the
command that reproduces it.
"""
import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from formats.files import read_jsonl, write_bytes_atomic, write_json_atomic  # noqa: E402
from geopt_vs_scratch import run  # noqa: E402  (bench/, this folder)
from training.depth.collapse import collapse_verdict  # noqa: E402

INITS = ("scratch", "geopt")


@dataclass(frozen=True)
class Setup:
    """The experiment's size; sizes WIDTHxHEIGHT in pixels."""
    seeds: int = 8
    steps: int = 200
    size: str = "128x64"
    batch_size: int = 4
    train_drives: int = 4
    frames_per_drive: int = 30
    kitti_size: str = "320x96"
    pretrain_steps: int = 150
    pretrain_batch_size: int = 8
    jobs: int = 2
    """Runs side by side, one thread each."""

    def recipe_options(self, recipe: str) -> list[str]:
        """`geopt-train transfer` options of a recipe: 'monodepth2' (its defaults: the pose network from
        --init and --seed, no warm-up, auto-masking from step 1) or 'stable' (`--recipe stable`: one pose
        network for every seed and init, warm-up over the first 15 % of the steps, no auto-masking for the
        first 30 %)."""
        return [] if recipe == "monodepth2" else ["--recipe", "stable"]


RECIPES = ("monodepth2", "stable")


def make_kitti(setup: Setup, work: Path, log: Path) -> Path:
    """A world KITTI-layout tree: `train_drives` training drives and one unseen test drive."""
    root = work / "kitti"
    run(["world.cli", "kitti", "--out", str(root), "--train-drives", str(setup.train_drives), "--test-drives", "1",
         "--frames", str(setup.frames_per_drive), "--size", setup.kitti_size, "--seed", "9000",
         "--workers", str(setup.jobs)], log)
    return root


def make_backbone(setup: Setup, work: Path, log: Path) -> Path:
    """A GeoPt backbone from a short pretraining on world shards (other drives than the KITTI tree's)."""
    run(["world.cli", "shards", "--out", str(work / "shards"), "--drives", "4", "--samples", "40", "--size",
         setup.size, "--seed", "500", "--workers", str(setup.jobs)], log)
    run(["training.cli", "pretrain", "--shards", str(work / "shards"), "--run-dir", str(work / "pretrain"),
         "--steps", str(setup.pretrain_steps), "--warmup-steps", str(max(1, setup.pretrain_steps // 20)),
         "--lr", "6e-4", "--size", setup.size, "--batch-size", str(setup.pretrain_batch_size), "--workers", "1",
         "--device", "cpu"], log, env={"OMP_NUM_THREADS": str(setup.jobs)})
    run(["training.cli", "export", "--ckpt", str(work / "pretrain" / "last.pt"), "--out", str(work / "backbone.pth")],
        log)
    return work / "backbone.pth"


def transfer_run(setup: Setup, work: Path, kitti: Path, backbone: Path, init: str, recipe: str, seed: int) -> dict:
    """One transfer and its evaluation; returns its row: Abs Rel, final kept share, collapse, minutes. A run
    whose row.json exists (finished before a `--resume`) is not run again."""
    name = f"{init}_{recipe}_seed{seed}"
    run_dir, log = work / "runs" / name, work / "logs" / f"{name}.log"
    if (run_dir / "row.json").is_file():
        return json.loads((run_dir / "row.json").read_text())
    shutil.rmtree(run_dir, ignore_errors=True)  # a run stopped half-way starts again
    started = time.perf_counter()
    run(["training.cli", "transfer", "--data", f"kitti:{kitti}", "--mode", "M", "--run-dir", str(run_dir),
         "--init", "scratch" if init == "scratch" else f"geopt:{backbone}", *setup.recipe_options(recipe),
         "--steps", str(setup.steps), "--size", setup.size, "--batch-size", str(setup.batch_size),
         "--log-every", str(max(1, setup.steps // 20)), "--seed", str(seed), "--workers", "1", "--device", "cpu"],
        log, env={"OMP_NUM_THREADS": "1"})
    scores = run_dir / "scores.json"
    run(["training.cli", "evaluate", "--data", f"kitti:{kitti}", "--split", "eigen", "--ckpt",
         str(run_dir / "last.pt"), "--device", "cpu", "--out", str(scores)], log, env={"OMP_NUM_THREADS": "1"})
    verdict = collapse_verdict(read_jsonl(run_dir / "log.jsonl"))
    row = {"init": init, "recipe": recipe, "seed": seed, "abs_rel": json.loads(scores.read_text())["errors"]["abs_rel"],
            "kept_share": verdict.kept_share, "translation": verdict.translation,
            "disparity_spread": verdict.disparity_spread, "collapsed": verdict.collapsed,
            "left_no_motion_at_step": verdict.left_no_motion_at_step,
            "minutes": (time.perf_counter() - started) / 60}
    write_json_atomic(run_dir / "row.json", row)
    return row


def arm_summary(rows: list[dict]) -> dict:
    """Collapse rate, mean Abs Rel over all runs and over the runs that did not collapse, mean escape step."""
    good = [r for r in rows if not r["collapsed"]]
    left = [r["left_no_motion_at_step"] for r in good]
    return {"runs": len(rows), "collapsed": len(rows) - len(good),
            "abs_rel_all": sum(r["abs_rel"] for r in rows) / len(rows),
            "abs_rel_not_collapsed": sum(r["abs_rel"] for r in good) / len(good) if good else None,
            "mean_left_at_step": sum(left) / len(left) if left else None}


def tables(rows: list[dict], arms: dict[str, dict]) -> str:
    """Markdown: one row per arm, then one row per run."""
    def number(value, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"
    lines = ["| init | recipe | collapsed | Abs Rel, all runs | Abs Rel, not collapsed | mean step it left |",
             "|---|---|---|---|---|---|"]
    for arm, s in arms.items():
        init, recipe = arm.split("/")
        lines.append(f"| {init} | {recipe} | {s['collapsed']}/{s['runs']} | {number(s['abs_rel_all'])} | "
                     f"{number(s['abs_rel_not_collapsed'])} | {number(s['mean_left_at_step'], 0)} |")
    lines += ["", "| init | recipe | seed | Abs Rel | kept share | translation | disparity spread | collapsed | "
              "left at step | minutes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['init']} | {r['recipe']} | {r['seed']} | {r['abs_rel']:.3f} | {r['kept_share']:.2f} | "
                     f"{number(r['translation'], 4)} | {r['disparity_spread']:.3f} | "
                     f"{'yes' if r['collapsed'] else 'no'} | {r['left_no_motion_at_step'] or '-'} | {number(r['minutes'], 1)} |")
    return "\n".join(lines)


def command_line(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The command that reproduces this run: the options that differ from their defaults, but --work, --out
    and --resume."""
    flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                    if k not in ("work", "out", "resume") and v != parser.get_default(k))
    return f"python bench/transfer_collapse.py{flags}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Setup()
    for field in ("seeds", "steps", "batch_size", "pretrain_steps", "jobs"):
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, default=getattr(defaults, field),
                            help="default: %(default)s")
    parser.add_argument("--size", default=defaults.size, help="transfer (and pretraining) size, default: %(default)s")
    parser.add_argument("--backbone", type=Path, default=None,
                        help="a GeoPt backbone (geopt-train export); default: made by a short pretraining")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "transfer_collapse",
                        help="working folder, emptied first (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="results.md and results.json (default: WORK)")
    parser.add_argument("--resume", action="store_true",
                        help="keep WORK's world, backbone and finished runs (same options as the stopped run)")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    setup = Setup(seeds=args.seeds, steps=args.steps, size=args.size, batch_size=args.batch_size,
                  pretrain_steps=args.pretrain_steps, jobs=args.jobs)
    if args.backbone is not None and not args.backbone.is_file():
        sys.exit(f"--backbone {args.backbone}: no such file")
    work, out = args.work, args.out or args.work
    if work.exists() and any(work.iterdir()) and not (work / "commands.log").is_file():
        sys.exit(f"{work} holds files this bench did not make; choose another --work")
    if not args.resume:
        shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    log, started = work / "commands.log", time.perf_counter()
    resumed = args.resume and (work / "kitti" / "splits").is_dir()
    kitti = work / "kitti" if resumed else make_kitti(setup, work, log)
    if args.backbone:
        backbone = args.backbone.resolve()
    elif args.resume and (work / "backbone.pth").is_file():
        backbone = work / "backbone.pth"
    else:
        backbone = make_backbone(setup, work, log)
    prepared_min = (time.perf_counter() - started) / 60
    jobs = [(init, recipe, seed) for seed in range(setup.seeds) for recipe in RECIPES for init in INITS]
    with ThreadPoolExecutor(setup.jobs) as pool:
        rows = list(pool.map(lambda job: transfer_run(setup, work, kitti, backbone, *job), jobs))
    arms = {f"{i}/{r}": arm_summary([row for row in rows if (row["init"], row["recipe"]) == (i, r)])
            for r in RECIPES for i in INITS}
    total_min = (time.perf_counter() - started) / 60
    command = command_line(parser, args)
    report = "\n".join([
        f"# Transfer collapse rate ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores)", "",
        f"Command: `{command}`", "",
        f"M mode, {setup.size}, batch {setup.batch_size}, {setup.steps} steps, seeds 0..{setup.seeds - 1}; "
        f"{setup.train_drives} world training drives of {setup.frames_per_drive} frames, Abs Rel on one unseen test "
        f"drive; GeoPt backbone: {args.backbone or f'{setup.pretrain_steps} pretraining steps on world shards'}. "
        f"Stable recipe: `{' '.join(setup.recipe_options('stable'))}`.", "",
        tables(rows, arms), "",
        f"Time: world and backbone {prepared_min:.1f} min, {len(rows)} runs "
        f"{sum(r['minutes'] for r in rows):.1f} run-minutes ({setup.jobs} side by side), total {total_min:.1f} min.", ""])
    write_bytes_atomic(out / "results.md", report.encode())
    write_json_atomic(out / "results.json", {"command": command, "setup": asdict(setup), "runs": rows, "arms": arms,
                                             "minutes": {"prepare": prepared_min, "total": total_min}})
    print(report)


if __name__ == "__main__":
    main()
