"""The closed-loop experiment (bench/geopt_vs_scratch.py) at its tiny budget, through the same code path as
--quick: world -> served videos -> mining -> pretraining -> export -> transfer -> evaluate -> report."""
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("geopt@all", "scratch@all", "geopt@10%", "scratch@10%", "geopt probe@all", "scratch probe@all")
ERRORS = ("abs_rel", "sq_rel", "rmse", "rmse_log")
ACCURACIES = ("a1", "a2", "a3")


@pytest.mark.timeout(600)
def test_tiny_experiment_closes_the_loop_with_finite_scores(tmp_path):
    work, report = tmp_path / "work", tmp_path / "report"
    command = [sys.executable, str(ROOT / "bench" / "geopt_vs_scratch.py"), "--budget", "tiny", "--device", "cpu",
               "--work", str(work), "--out", str(report)]
    experiment = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = experiment.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        os.killpg(experiment.pid, signal.SIGKILL)  # the experiment and the command it was running
        stdout, stderr = experiment.communicate()
        pytest.fail(f"the tiny experiment took over 540 s; it had printed:\n{stdout}")
    assert experiment.returncode == 0, stdout[-3000:] + stderr[-3000:]

    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert rows and rows[0].startswith("| init | training data | Abs Rel")
    assert rows[0].endswith("| Abs Rel, highway (never trained on) |"), rows[0]
    for run in RUNS:
        init, fraction = run.split("@")
        assert any(row.startswith(f"| {init} | {fraction} | ") for row in rows), f"no table row for {run}"
    for name in ("results.md", "results.json", "learning_curves.png", "depth_examples.png"):
        assert (report / name).stat().st_size > 0, name

    results = json.loads((report / "results.json").read_text())
    assert set(RUNS) <= set(results["errors"])
    assert set(results["generalisation_errors_per_seed"]) == set(results["errors"])
    assert "GeoPt vs scratch Abs Rel with the encoder frozen (probe)" in stdout
    for run, scores in results["errors"].items():
        assert all(math.isfinite(v) for v in scores.values()), f"{run}: {scores}"
        assert scores["abs_rel"] > 0 and all(scores[k] >= 0 for k in ERRORS), f"{run}: {scores}"
        assert all(0 <= scores[k] <= 1 for k in ACCURACIES), f"{run}: {scores}"
        assert scores["a1"] <= scores["a2"] <= scores["a3"], f"{run}: {scores}"
    assert all(math.isfinite(m) and m >= 0 for m in results["minutes"].values()), results["minutes"]
    assert results["minutes"]["total"] > 0
