"""The distillation health check (live, row by row) and the per-run summary."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from medmim.train.health import HealthCheck, families, read_metrics, summarize, verdict

LN_K = math.log(65536)
TOTAL = 1000
STEPS = [1, *range(10, TOTAL + 1, 10)]


def rows(
    entropy: Callable[[float], float],
    cos_batch: float = 0.3,
    cos_views: float = 0.8,
    ce: Callable[[float], float] = lambda t: 0.7 * LN_K,
    families_: tuple[str, ...] = ("patch", "cls"),
) -> list[dict[str, float]]:
    """Logged rows of a TOTAL-step run; entropy and CE are functions of the run fraction t."""
    out = []
    for step in STEPS:
        t = step / TOTAL
        row = {"loss": 3.0, "distill/ln_k": LN_K}
        for f in families_:
            row |= {
                f"teacher/entropy/{f}": entropy(t),
                f"distill/ce/{f}": ce(t),
                f"teacher/cos_batch/{f}": cos_batch,
            }
            if f != "patch":
                row[f"teacher/cos_views/{f}"] = cos_views
        out.append(row)
    return out


def messages(table: list[dict[str, float]]) -> list[tuple[int, str]]:
    check = HealthCheck(TOTAL)
    return [
        (step, m) for step, row in zip(STEPS, table, strict=True) for m in check.update(step, row)
    ]


def learning(t: float) -> float:
    return 1.0 - 0.7 * min(1.0, 2 * t)  # falls from 1 to 0.3 over the first half


def test_silent_on_a_learning_run() -> None:
    table = rows(learning, cos_batch=0.4, cos_views=0.85)
    assert messages(table) == []
    summary = summarize(table)
    assert list(summary) == ["patch", "cls"]
    cls = summary["cls"]
    assert cls.verdict == "learning" and not cls.ce_above_ln_k
    assert cls.entropy_start == pytest.approx(learning(STEPS[0] / TOTAL))
    assert cls.entropy_end == pytest.approx(0.3) and cls.ln_k == pytest.approx(LN_K)
    assert cls.cos_views == pytest.approx(0.85) and summary["patch"].cos_views is None


def test_warns_once_per_family_on_a_uniform_teacher() -> None:
    found = messages(rows(lambda t: 0.999, cos_batch=0.995, ce=lambda t: LN_K))
    assert [step for step, _ in found] == [
        400,
        400,
    ]  # a fifth past the first fifth, once per family
    patch = next(m for _, m in found if "'patch'" in m)
    assert patch.startswith(
        "step 400: distillation health: the teacher's 'patch' targets have been near uniform"
    )
    for knob in (
        "optim.lr_scaling=linear",
        "optim.base_lr",
        "data.views=shared",
        "method.teacher_temp",
        "method.warmup_teacher_temp",
        "method.momentum_start",
        "method.centering=sinkhorn",
    ):
        assert knob in patch
    assert "same output (cos_batch 0.995)" in patch
    assert summarize(rows(lambda t: 0.999))["cls"].verdict == "uniform"


def test_warns_on_a_collapsed_teacher() -> None:
    one_hot = messages(rows(lambda t: 0.02 if t > 0.3 else learning(t), families_=("cls",)))
    assert len(one_hot) == 1 and one_hot[0][0] == 500  # rows 310..500 cover steps 301-500
    text = one_hot[0][1]
    assert "'cls' targets have collapsed" in text and "entropy / ln K 0.020" in text
    for knob in ("method.teacher_temp", "method.centering=sinkhorn", "method.koleo_weight"):
        assert knob in text
    same = messages(rows(lambda t: 0.5, cos_batch=0.998, families_=("pooled",)))
    assert len(same) == 1 and "cos_batch 0.998" in same[0][1]
    assert summarize(rows(lambda t: 0.5, cos_batch=0.998))["patch"].verdict == "collapsed"


def test_a_state_shorter_than_a_fifth_is_not_reported() -> None:
    # uniform for the first 15% of the run (the usual DINO start), then learning
    assert messages(rows(lambda t: 0.99 if t < 0.15 else 0.5)) == []
    # uniform for 35% (the demo's SMART pooled family: 60 of 250 steps), then learning: the
    # first fifth is grace, so the stretch that counts is 15% of the run
    assert messages(rows(lambda t: 0.99 if t < 0.35 else 0.5)) == []
    # uniform twice for 150 steps each, interrupted: no single stretch covers a fifth
    assert messages(rows(lambda t: 0.99 if (t // 0.15) % 2 == 0 else 0.5)) == []


def test_ce_above_ln_k_is_flagged_once() -> None:
    table = rows(learning, ce=lambda t: 1.1 * LN_K, families_=("cls",))
    found = messages(table)
    assert len(found) == 1
    step, text = found[0]
    assert step == 290  # ten rows logged past a fifth of the run (200, 210, ..., 290)
    assert (
        text.startswith("step 290: distillation health: the 'cls' distillation CE")
        and "above ln K" in text
    )
    assert summarize(table)["cls"].ce_above_ln_k
    assert messages(rows(learning, ce=lambda t: 1.01 * LN_K)) == []  # within the 2% margin


def test_summary_of_old_runs_and_helpers(tmp_path) -> None:
    old = [{"step": s, "loss": 1.0, "teacher/entropy/itd": 0.99} for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text(
        "".join(f'{{"step": {r["step"]}, "teacher/entropy/itd": 0.99}}\n' for r in old)
        + '{"step": 4, "te',
        encoding="utf-8",
    )
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 3
    summary = summarize(old, ln_k=5.0)["itd"]
    assert (summary.verdict, summary.ln_k, summary.ce_end) == ("uniform", 5.0, None)
    assert summarize([{"step": 1, "loss": 2.0}]) == {}
    assert families(
        ["distill/ln_k", "distill/ce/patch", "teacher/entropy/cls", "teacher/cos_batch/patch"]
    ) == ["patch", "cls"]
    assert verdict(None, 0.999) == "unknown" and verdict(0.3, 0.5) == "learning"
