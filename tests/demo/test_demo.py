"""`medmim demo`: settings, stage markers, statistics, and the whole pipeline at a tiny budget."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medmim.cli.main import build_parser
from medmim.demo import stats
from medmim.demo.config import demo_config
from medmim.demo.data import split_phantoms, write_datalists
from medmim.demo.pipeline import check_settings, run_demo
from medmim.demo.stages import StageRunner
from medmim.demo.study import encoder_specs
from medmim.errors import ConfigError

# --- settings ---------------------------------------------------------------------------------


def test_profiles_and_overrides() -> None:
    assert (
        demo_config().pretrain_steps
        > demo_config("quick").pretrain_steps
        > demo_config("tiny").pretrain_steps
    )
    cfg = demo_config("quick", ["pretrain_steps=7", "methods=[smart]", "nodules=[2,3]"])
    assert (cfg.pretrain_steps, cfg.methods, cfg.nodules, cfg.phantoms) == (
        7,
        ["smart"],
        [2, 3],
        24,
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("pretrain_step=5", "Did you mean 'pretrain_steps'"),
        ("crop=48", "crop=48: give a multiple of 32"),
        ("segment_roi=32", "segment_roi=32"),
        ("tasks=[linear,segmnt]", "(?i)did you mean 'segment'"),
        ("phantoms=3", "phantoms=3: at least 4"),
        ("batch_size=3", "batch_size=3: at most the 2 pretraining phantoms"),
    ],
)
def test_bad_settings_name_the_fix(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        demo_config("tiny", [override])
    with pytest.raises(ConfigError, match="(?i)budget 'quik' is unknown.*did you mean 'quick'"):
        demo_config("quik")


def test_gpu_budget_fits_its_pretraining_phantoms() -> None:
    gpu, default = demo_config("gpu"), demo_config()
    assert gpu.pretrain_steps >= 10 * default.pretrain_steps and gpu.batch_size > default.batch_size
    assert gpu.batch_size <= gpu.phantoms - round(gpu.holdout * gpu.phantoms)  # 16 <= 20
    assert build_parser().parse_args(["demo", "--gpu"]).gpu


def test_encoders_and_the_noise_floor(tmp_path: Path) -> None:
    specs = encoder_specs(
        demo_config("tiny", ["noise_floor=true", "methods=[smit,smart]"]), tmp_path
    )
    assert list(specs) == ["smit", "smart", "scratch", "scratch2"]
    # scratch is the first method's architecture
    assert specs["scratch"] == specs["scratch2"] == f"scratch:{tmp_path / 'pretrain/smit/export'}"
    assert list(encoder_specs(demo_config("tiny", ["methods=[smit]"]), tmp_path)) == [
        "smit",
        "scratch",
    ]


def test_cli_parses_budgets() -> None:
    args = build_parser().parse_args(["demo", "--quick", "--seed", "3", "pretrain_steps=9"])
    assert (args.quick, args.tiny, args.seed, args.overrides) == (
        True,
        False,
        3,
        ["pretrain_steps=9"],
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--quick", "--tiny"])


def test_folder_with_other_settings_is_refused(tmp_path: Path) -> None:
    check_settings(demo_config("tiny"), tmp_path, restart=False)
    check_settings(demo_config("tiny"), tmp_path, restart=False)  # same settings: fine
    with pytest.raises(ConfigError, match=r"other settings \(pretrain_steps 2 -> 3\).*--restart"):
        check_settings(demo_config("tiny", ["pretrain_steps=3"]), tmp_path, restart=False)
    (tmp_path / "stale.txt").write_text("x", encoding="utf-8")
    check_settings(demo_config("tiny", ["pretrain_steps=3"]), tmp_path, restart=True)
    assert not (tmp_path / "stale.txt").exists()
    assert json.loads((tmp_path / "demo.json").read_text(encoding="utf-8"))["pretrain_steps"] == 3


# --- data splits --------------------------------------------------------------------------------


def test_pretraining_never_sees_the_evaluation_phantoms(tmp_path: Path) -> None:
    def case(i: int) -> dict[str, str]:
        return {
            "image": f"images/phantom_{i:04d}.nii.gz",
            "label": f"labels/phantom_{i:04d}_x.nii.gz",
        }

    sections = {
        "training": [case(i) for i in range(7)],
        "validation": [case(7), case(8)],
        "test": [case(9)],
    }
    for name in ("organs", "tumors"):
        (tmp_path / f"{name}.json").write_text(
            json.dumps({"name": name, **sections}), encoding="utf-8"
        )
    (tmp_path / "nodules.csv").write_text(
        "image,label,split,phantom\n"
        + "".join(f"n{i}.nii.gz,{i % 2},train,phantom_{i:04d}\n" for i in range(10)),
        encoding="utf-8",
    )
    cfg = demo_config(
        "tiny",
        ["holdout=0.4", "segment_train_cases=2", "segment_eval_cases=3", "localize_eval_cases=0"],
    )
    counts = write_datalists(cfg, tmp_path)
    assert counts == {
        "pretrain_scans": 6,
        "held_out_scans": 4,
        "nodules_train": 6,
        "nodules_test": 4,
        "segment_train": 2,
        "segment_eval": 3,
        "localize_eval": 4,
    }
    read = {
        n: json.loads((tmp_path / f"demo_{n}.json").read_text(encoding="utf-8"))
        for n in ("pretrain", "organs", "tumors")
    }
    pretrained = {e["image"] for e in read["pretrain"]["training"]}
    scored = {e["image"] for e in read["organs"]["validation"] + read["tumors"]["test"]}
    assert (
        pretrained == {f"images/phantom_{i:04d}.nii.gz" for i in range(6)}
        and not pretrained & scored
    )
    assert {e["image"] for e in read["organs"]["training"]} <= pretrained
    with (tmp_path / "demo_nodules.csv").open(encoding="utf-8") as f:
        test_phantoms = {r["phantom"] for r in csv.DictReader(f) if r["split"] == "test"}
    assert test_phantoms == {f"phantom_{i:04d}" for i in range(6, 10)}
    assert split_phantoms(4, 0.5) == (2, 2) and split_phantoms(3, 0.01) == (2, 1)


# --- stage markers ------------------------------------------------------------------------------


def test_stages_run_once_and_failures_are_retried(tmp_path: Path) -> None:
    calls: list[str] = []
    out = io.StringIO()

    def boom() -> dict:
        calls.append("b")
        raise RuntimeError("disk on fire")

    runner = StageRunner(tmp_path, total=2, stream=out)
    runner.run("a/x", "first", lambda: calls.append("a") or {"v": 1})
    assert runner.run("b", "second", boom) is None
    assert runner.failed == ["b"] and "FAILED: RuntimeError: disk on fire" in out.getvalue()
    assert json.loads((tmp_path / "stages" / "a-x.json").read_text(encoding="utf-8"))["result"] == {
        "v": 1
    }

    again = StageRunner(tmp_path, total=2, stream=io.StringIO())
    again.run("a/x", "first", lambda: calls.append("a2"))
    again.run("b", "second", lambda: {"ok": True})
    assert calls == ["a", "b"]  # a/x skipped, b retried with the new function
    assert again.skipped == ["a/x"] and not again.failures()
    with pytest.raises(RuntimeError):
        StageRunner(tmp_path, total=1, keep_going=False, stream=io.StringIO()).run("c", "c", boom)


# --- statistics ---------------------------------------------------------------------------------


def test_fast_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        y, p = rng.integers(0, 2, 25), np.round(rng.random(25), 1)
        if len(set(y)) == 2:
            assert stats.fast_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert np.isnan(stats.fast_auc(np.ones(4), np.arange(4.0)))


def test_intervals_resolve_a_real_gap_and_not_noise() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(0.5, 0.1, 40)
    clear = stats.mean_delta(base + 0.1 + rng.normal(0, 0.01, 40), base)
    noise = stats.mean_delta(base + rng.normal(0, 0.1, 40), base)
    assert clear.excludes_zero() and clear.low > 0.09
    assert not noise.excludes_zero()
    e = stats.mean_ci(np.array([0.2, 0.4]))
    assert e.value == pytest.approx(0.3) and 0.2 <= e.low <= e.high <= 0.4 and e.n == 2


def test_cluster_bootstrap_widens_for_correlated_cases() -> None:
    # 10 phantoms x 8 nodules; each phantom has its own malignant share and its own score offset
    # (a phantom-level confound), so the nodules of one phantom are not independent and
    # resampling nodules understates the uncertainty of the AUC.
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(10), 8)
    y = (rng.random(80) < rng.uniform(0.1, 0.9, 10)[groups]).astype(int)
    p = rng.normal(0, 1.0, 10)[groups] + 0.2 * y + rng.normal(0, 0.3, 80)
    flat, grouped = stats.auc_ci(y, p), stats.auc_ci(y, p, groups=groups)
    assert grouped.value == flat.value
    assert grouped.high - grouped.low > 1.25 * (flat.high - flat.low)
    # one group: no cluster bootstrap possible, falls back to cases
    same = stats.auc_ci(y, p, groups=np.zeros(80, int))
    assert (same.low, same.high) == (flat.low, flat.high)


def test_random_mask_dice(tmp_path: Path) -> None:
    (tmp_path / "localize.csv").write_text(
        "case,dice,pointing,threshold,predicted_voxels,reference_voxels\nc1,0.1,1.0,0.5,100,50\n",
        encoding="utf-8",
    )
    case = stats.localize_cases(tmp_path, percentile=90.0)["c1"]
    # 1000 scored voxels; a random 100 of them overlap the 50 reference voxels in 5 on average
    assert case["chance_dice"] == pytest.approx(2 * 5 / 150)
    assert case["chance_pointing"] == pytest.approx(0.05)


# --- the whole pipeline -------------------------------------------------------------------------


def _markers(out: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")}


@pytest.mark.slow
def test_tiny_demo_end_to_end_then_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = demo_config("tiny", ["methods=[smart]"])
    out = tmp_path / "demo"
    assert run_demo(cfg, out, keep_going=False) == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| task | metric | SMART | scratch |" in report
    for row in (
        "nodule malignancy, linear probe",
        "nodule malignancy, fine-tuning",
        "k-means NMI",
        "zero-shot tumor localization",
        "tumor attention ratio",
        "few-label organ segmentation",
        "| task | metric | SMART − scratch |",
    ):
        assert row in report
    assert "## What these numbers can and cannot show" in report
    assert (out / "details.md").is_file() and (out / "pretrain/smart/export/encoder.json").is_file()
    markers = _markers(out)
    assert len(markers) == 1 + 1 + 5 * 2  # data, pretrain, 5 tasks x (smart, scratch)
    linear = json.loads((out / "eval/linear/smart/results.json").read_text(encoding="utf-8"))[
        "metrics"
    ]

    capsys.readouterr()
    assert run_demo(cfg, out, keep_going=False) == 0  # everything finished: only the report
    assert _markers(out) == markers
    assert capsys.readouterr().out.count("done before") == len(markers)

    (out / "stages" / "pretrain-smart.json").unlink()  # as if killed after the last checkpoint
    (out / "stages" / "linear-smart.json").unlink()
    assert run_demo(cfg, out, keep_going=False) == 0
    printed = capsys.readouterr().out
    assert "(resume=true)" in printed and printed.count("done before") == len(markers) - 2
    assert (
        json.loads((out / "eval/linear/smart/results.json").read_text(encoding="utf-8"))["metrics"]
        == linear
    )


def test_pretraining_section_shows_distillation_health(tmp_path: Path) -> None:
    from medmim.demo.collect import Collected
    from medmim.demo.report import caveats, pretraining_section
    from medmim.demo.study import nodule_groups

    run = tmp_path / "pretrain" / "smart"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("method:\n  out_dim: 256\n", encoding="utf-8")
    ln_k = float(np.log(256))
    rows = [
        {
            "step": s,
            "loss/rec": 0.4 - 0.01 * s,
            "loss/glob": ln_k,
            "distill/ce/patch": ln_k,
            "teacher/entropy/patch": 0.999,
            "distill/ce/cls": 5.0 - 0.1 * s,
            "teacher/entropy/cls": 1.0 - 0.03 * s,
            "teacher/cos_batch/cls": 0.2,
            "teacher/cos_views/cls": 0.8,
        }
        for s in range(1, 21)
    ]
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
    )
    cfg = demo_config("tiny", ["methods=[smart]"])
    c = Collected(cfg, tmp_path)
    table, stuck = pretraining_section(c)
    assert stuck == {"uniform": ["SMART patch"], "collapsed": []}
    assert "| SMART | REC | – | 0.390 | 0.205 |" in table  # first, mean of the last 2 of 20 rows
    assert "| SMART | patch | 0.999 → 0.999 | 5.545 → 5.545 | 5.545 | – | – | uniform |" in table
    assert (
        "| SMART | cls | 0.970 → 0.415 | 4.900 → 3.050 | 5.545 | 0.200 | 0.800 | learning |"
        in table
    )
    assert "SMART patch kept near-uniform teacher targets" in caveats(c, [], stuck)
    assert "At this budget" not in caveats(c, [], {"uniform": [], "collapsed": []})
    # folds keep a phantom's nodules together unless too few phantoms per fold
    assert nodule_groups(demo_config("default"), 5) == "phantom"
    assert nodule_groups(demo_config("tiny"), 2) == "none"


def test_results_table_lists_only_the_tasks_that_ran(tmp_path: Path) -> None:
    from medmim.demo.collect import Collected
    from medmim.demo.report import results_table

    table = results_table(Collected(demo_config("tiny", ["tasks=[linear,segment]"]), tmp_path))
    assert "linear probe" in table and "segmentation" in table
    assert "fine-tuning" not in table and "clustering" not in table and "localization" not in table
    every = results_table(Collected(demo_config("tiny"), tmp_path))
    assert all(t in every for t in ("fine-tuning", "clustering", "localization"))
