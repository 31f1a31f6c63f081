"""When a Monodepth2 transfer sits in the no-motion state, one rule for the log, the summary and the benches.

The state (issue 22, `../shared/notes/monodepth2-collapse.md`): the pose network predicts almost no
motion, a warp with no translation does not depend on depth, so the warped and unwarped sources tie,
auto-masking keeps about half the pixels by its random tie-break, and the depth network gets no signal;
its disparity stays flat. On the H200 (640x192, M, 500 steps) the three collapsed runs ended keeping
0.50-0.54 of the pixels, the one good run 0.75.

A logged step is in the state when auto-masking keeps at most `COLLAPSED_KEPT_SHARE` of the pixels while
the predicted translation is below `NO_MOTION_TRANSLATION` (S mode has no predicted translation: the
kept share alone decides), or when the predicted disparity is flat (spread below `FLAT_DISPARITY_SPREAD`).
Each logged value is one batch's, so the verdict judges the mean of `SMOOTHING_ROWS` logged rows.

Measured at 128x64 on world KITTI drives, M, batch 4 (2026-12-04): a run that stayed in the state
(Monodepth2's defaults, 40 steps) kept 0.20-0.41 of the pixels, translation 0.003-0.006, disparity
spread 0.02-0.03; a run that left it (scratch, pose seed 0, warm-up 30, auto-masking after 60, 200
steps) kept 0.64-0.76 from step 60 on, translation 0.007-0.013, spread 0.19 at step 50 and 0.33-0.47
from step 60.
"""
from dataclasses import dataclass

COLLAPSED_KEPT_SHARE = 0.55
"""Collapsed runs kept 0.50-0.54 of the pixels (a coin toss of the tie-break), the good run 0.75."""
NO_MOTION_TRANSLATION = 0.005
"""Mean |translation| per frame pair, in the depth network's unit (metres in S and MS; in M the unit of
Monodepth2's 0.1..100 range, where a fresh network predicts depth 0.2). A fresh pose network predicts
0.001-0.006 (its output is scaled by 0.01), one that learned 0.007-0.013 (measured, module docstring)."""
FLAT_DISPARITY_SPREAD = 0.1
"""Std over pixels / mean of the disparity (1 / depth), averaged over the batch: a fresh decoder gives
0.02-0.03, a depth map with the road receding to the horizon 0.3-0.5 (measured, module docstring)."""
SMOOTHING_ROWS = 3
"""Logged rows averaged (trailing) before the rule judges them: one batch's kept share swings by 0.2."""


def is_no_motion(kept_share: float, translation: float | None, disparity_spread: float) -> bool:
    """True for a logged step in the no-motion state; `translation` None where no pose is predicted (S)."""
    motionless = translation is None or translation < NO_MOTION_TRANSLATION
    return (kept_share <= COLLAPSED_KEPT_SHARE and motionless) or disparity_spread < FLAT_DISPARITY_SPREAD


@dataclass(frozen=True)
class CollapseVerdict:
    collapsed: bool
    """The run's last logged step is in the no-motion state."""
    left_no_motion_at_step: int | None
    """The first logged step from which no later logged step is in the state; None when the run ends in it
    (it may have left and fallen back)."""
    kept_share: float
    translation: float | None
    disparity_spread: float


def collapse_verdict(log_rows: list[dict]) -> CollapseVerdict | None:
    """The verdict over a run's `log.jsonl` rows (those with the training scalars, each judged as the mean
    of itself and the `SMOOTHING_ROWS` - 1 before it); None without any."""
    logged = [r for r in log_rows if "automask_kept" in r and "disparity_spread" in r]
    if not logged:
        return None
    rows = [_trailing_mean(logged[max(0, i + 1 - SMOOTHING_ROWS):i + 1]) for i in range(len(logged))]
    states = [is_no_motion(r["automask_kept"], r.get("translation"), r["disparity_spread"]) for r in rows]
    left = None
    for row, state in zip(reversed(rows), reversed(states)):
        if state:
            break
        left = row["step"]
    last = rows[-1]
    return CollapseVerdict(collapsed=states[-1], left_no_motion_at_step=left, kept_share=last["automask_kept"],
                           translation=last.get("translation"), disparity_spread=last["disparity_spread"])


def _trailing_mean(rows: list[dict]) -> dict:
    """The last row's step with the mean kept share, translation (None without) and disparity spread."""
    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return sum(values) / len(values) if values else None
    return {"step": rows[-1]["step"], "automask_kept": mean("automask_kept"), "translation": mean("translation"),
            "disparity_spread": mean("disparity_spread")}


def describe(verdict: CollapseVerdict | None) -> str:
    """One line for a run's summary."""
    if verdict is None:
        return "no training scalars logged"
    motion = "" if verdict.translation is None else f", mean |translation| {verdict.translation:.4f}"
    facts = f"last {SMOOTHING_ROWS} logs: auto-mask kept {verdict.kept_share:.2f}{motion}, disparity spread {verdict.disparity_spread:.3f}"
    if verdict.collapsed:
        return f"COLLAPSED: ends in the no-motion state ({facts})"
    return f"not collapsed: left the no-motion state at step {verdict.left_no_motion_at_step} ({facts})"
