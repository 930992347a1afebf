"""A study's questions: one Factors record per run, pairing by seed, verdicts and the report parts,
on constructed run records whose true effects are known."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import yaml

from conftest import REPO
from lightclf.errors import ConfigError
from lightclf.factors import Choice, Factors, Question
from lightclf.runs import RunRecord, write_json
from lightclf.study.report.choices import choose
from lightclf.study.report.collect import RunRow
from lightclf.study.report.questions import (
    Comparison,
    _arms_table,
    answer,
    collect_results,
    compare,
    write_question_report,
)
from lightclf.study.spec import Study, load_study

ARMS = {"none": 0.0, "late": 0.0001, "early": 0.01}  # true effects on top-1: none, ~nothing, +1 point
LR_01 = '{"model.optimizer.init_args.lr": 0.1}'


def _study(tmp_path, seeds=range(8)) -> Study:
    rng = np.random.default_rng(0)
    base = {"network": "ddsnet", "small_input": True, "width_multiplier": 0.25, "resolution": 28}
    runs = [
        {**base, "dilation": 1},
        {**base, "dilation": 2, "dilation_schedule": "late"},
        {**base, "dilation": 2, "dilation_schedule": "early"},
        {"network": "googlenet", "resolution": 56, "seeds": [0, 1, 2]},
        {"network": "googlenet", "resolution": 56, "network_kwargs": {"aux_logits": False}, "seeds": [0, 1, 2]},
        {"network": "googlenet", "resolution": 56, "overrides": {"model.optimizer.init_args.lr": 0.1}, "seeds": [0]},
    ]
    study = Study(
        name="q", base_config="unused.yaml", grid={"network": []}, runs=runs, seeds=list(seeds), order="seeds",
        records=str(tmp_path / "records"), save_dir=str(tmp_path / "runs"), protocol="Constructed runs.",
        questions=[
            {"name": "late vs none", "a": {"dilation_schedule": "none"}, "b": {"dilation_schedule": "late"}},
            {"name": "early vs none", "a": {"dilation_schedule": "none"}, "b": {"dilation_schedule": "early"}},
            {"name": "no aux vs aux", "a": {"other": ""}, "b": {"other": '{"aux_logits": false}'},
             "where": {"network": "googlenet"}},
        ],
        choices=[{"name": "googlenet peak LR", "where": {"network": "googlenet", "seed": 0},
                  "options": {"0.2 (recipe)": {"other": ""}, "0.1": {"other": LR_01}}}],
    )  # fmt: skip
    seed_effect = {s: rng.normal(0, 0.004) for s in range(8)}  # shared by the arms of one seed: pairing removes it
    for spec in study.specs():
        f = Factors.from_study(spec.factors)
        arm = f.dilation_schedule or ("lr0.1" if f.other == LR_01 else "noaux" if f.other else "aux")
        top1 = 0.91 + ARMS.get(arm, 0.0) + seed_effect[f.seed] + rng.normal(0, 0.0007)
        val = top1 + (0.02 if arm == "lr0.1" else 0.002)  # the 0.1 option wins on validation ...
        top1 = top1 - 0.03 if arm == "lr0.1" else top1  # ... and loses on test: the pick must not look
        folder = tmp_path / "records" / spec.run_id
        record = RunRecord(folder=folder)
        record.update(status="finished", test_metrics={"test/acc1": top1}, fit_metrics={"val/acc1": val})
        record.write(RunRecord.COMPLEXITY, {"params": 215642, "macs": 9599296, "receptive_field": 139})
        record.write(RunRecord.STUDY, {"study": "q", **spec.factors})
        heat = np.zeros((28, 28))
        heat[10:18, 10:18] = 1.0
        write_json(folder / RunRecord.ERF, {"r50": 3.0, "r95": 6.0, "heatmap": (heat / heat.sum()).tolist()})
    return study


def _with_references(study: Study) -> Study:
    """The late and early questions (true effects ~0 and +1 point) with effects reported elsewhere:
    above, inside and below their intervals."""
    late, early = study.questions[:2]
    return replace(study, questions=[
        {**late, "reference": {"effect": 0.03, "source": "Paper A"}},
        {**early, "reference": {"effect": 0.01, "source": "Paper B"}},
        {**early, "name": "early again", "reference": {"effect": -0.01, "source": "Paper C"}},
        *study.questions[2:],
    ])  # fmt: skip


def _reference_lines(text: str) -> dict[str, str]:
    return {line.split(":")[0][2:]: line for line in text.splitlines() if line.startswith("- ")}


def test_factors_name_a_configuration_once():
    late = Factors.from_study({"network": "ddsnet", "width_multiplier": 0.25, "resolution": 28, "dilation": 2,
                               "small_input": True, "seed": 3})  # fmt: skip
    named = Factors.from_study({"network": "ddsnet", "width_multiplier": 0.25, "resolution": 28, "dilation": 2,
                                "dilation_schedule": "late", "small_input": True, "seed": 4})  # fmt: skip
    assert late.configuration == named.configuration  # the default schedule is "late"
    assert late.label == "ddsnet w0.25 28px d2 late"
    plain = Factors.from_study({"network": "ddsnet_plainconv", "width_multiplier": 0.25, "seed": 0,
                                "overrides": {"trainer.max_epochs": 4}})  # fmt: skip
    assert plain.separable is False and plain.budget == "4 ep" and plain.dilation_schedule == "late"
    lr = Factors.from_study({"network": "googlenet", "resolution": 56, "seed": 0,
                             "overrides": {"data.init_args.train_subset": 20000, "trainer.max_epochs": 2,
                                           "model.optimizer.init_args.lr": 0.1}})  # fmt: skip
    assert lr.budget == "20k img x 2 ep" and lr.other == '{"model.optimizer.init_args.lr": 0.1}'
    assert lr.label == "googlenet 56px (20k img x 2 ep) lr=0.1" and lr.width_multiplier is None
    small = Factors.from_study({"network": "ddsnet", "seed": 0, "overrides": {"data.init_args.train_subset": 1500}})
    assert small.budget == "1.5k img" and small.other == ""
    listed = Factors.from_study({"network": "ddsnet", "dilation_schedule": [2] * 13, "seed": 0})
    assert listed.dilation_schedule == "/".join(["2"] * 13) and hash(listed)


def test_questions_pair_by_seed_and_reach_the_right_verdicts(tmp_path):
    study = _study(tmp_path)
    runs = collect_results(study)
    assert len(runs) == 8 * 3 + 6 + 1
    early, _ = answer(Question.parse(study.questions[1]), runs, 0.003)
    assert early.paired and early.n == 8 and early.mean == pytest.approx(0.01, abs=0.0015)
    aux, _ = answer(Question.parse(study.questions[2]), runs, 0.003)
    assert aux.paired and aux.n == 3  # googlenet with and without aux heads pair by seed
    either = Question.parse({"name": "any dilation", "a": {"dilation": 1}, "b": {"dilation": 2}})
    assert answer(either, runs, 0.003)[0].n == 8  # one-to-one: a d1 run is never in two pairs
    across = Question.parse({"name": "vs googlenet", "a": {"network": "googlenet", "resolution": 56, "other": ""},
                             "b": {"network": "ddsnet", "dilation_schedule": "late"}})  # fmt: skip
    effect = answer(across, runs, 0.003)[0]
    assert effect.paired and effect.n == 3  # networks pair by seed too (the factors only DDSNet has move along)
    # An arm that catches runs of several configurations says so (the LR-0.1 runs are googlenet too).
    broad = compare(
        Question.parse({"name": "broad", "a": {"network": "googlenet"}, "b": {"dilation_schedule": "late"}}), runs
    )
    assert Comparison.configurations(broad.a) == {
        "googlenet 56px": 3, "googlenet 56px aux_logits=False": 3, "googlenet 56px lr=0.1": 1
    }  # fmt: skip
    odd = Question.parse({"name": "broad", "a": {"network": "googlenet"}, "b": {"dilation": 7}})
    flagged = _arms_table([(odd, compare(odd, runs))])
    assert "googlenet 56px lr=0.1: 1 run **(3 configurations)** | - | - |" in flagged  # b: none run yet

    path = write_question_report(study, tmp_path / "reports", notes="Status: constructed.")
    text = path.read_text()
    assert text.index("## Protocol") < text.index("## Verdicts") < text.index("Status: constructed.")
    rows = {r["question"]: r for r in csv.DictReader((path.parent / "verdicts.csv").open())}
    assert rows["early vs none"]["verdict"] == "better"
    assert rows["late vs none"]["verdict"] == "equivalent within ±0.3 points"  # shown, not just "not significant"
    assert float(rows["late vs none"]["mde"]) < 0.003  # 8 pairs detect less than the margin
    assert rows["no aux vs aux"]["n"] == "3" and float(rows["no aux vs aux"]["mde"]) > 0
    assert "31 of 31 planned runs finished" in text and "Holm over the questions tested" in text
    assert "| 12 | 1024 | 1 | 4x4 | 1 | 83 | 69% | 2 | 139 | 44% |" in text  # block 12: late rate 2 on 4x4
    assert (path.parent / "erf_heatmaps.png").stat().st_size > 1000
    # Measured radii beside an even spread's over 28 px (11.1 / 17.0 px); the 8x8 block is 64 of
    # 784 pixels, so 32 (4%) hold half the gradient and 61 (8%) hold 95%.
    assert "| 8 | 28x28 | 3.0 ± 0.0 / 6.0 ± 0.0 | 11.1 / 17.0 | 4 ± 0% / 8 ± 0% |" in text
    assert "googlenet 56px aux_logits=False" in text
    assert "| no aux vs aux | googlenet 56px: 3 runs | googlenet 56px aux_logits=False: 3 runs | 0 |" in text
    # The LR is picked on validation although test says otherwise; test is shown, not used.
    assert (
        text.index("## Verdicts") < text.index("## Settings chosen on validation") < text.index("Status: constructed.")
    )
    picks = {r["option"]: r for r in csv.DictReader((path.parent / "choices.csv").open())}
    assert picks["0.1"]["picked"] == "True" and picks["0.2 (recipe)"]["picked"] == "False"
    assert float(picks["0.1"]["test_top1"]) < float(picks["0.2 (recipe)"]["test_top1"])
    assert "| googlenet peak LR | 0.1 | 1 (0) |" in text and "**yes** |" in text


def test_a_partial_study_says_so_and_bad_questions_are_one_line(tmp_path):
    from lightclf.errors import ConfigError

    study = _study(tmp_path, seeds=range(2))
    lr_run = next(spec for spec in study.specs() if spec.factors.get("overrides"))
    for spec in (study.specs()[0], lr_run):
        (tmp_path / "records" / spec.run_id / "results.json").unlink()
    text = write_question_report(study, tmp_path / "reports").read_text()
    assert "11 of 13 planned runs finished" in text and "partial" in text
    assert "| googlenet peak LR | 0.1 | 0 (-) | - | - | waiting for 0.1 |" in text
    with pytest.raises(ConfigError, match="unknown factors"):
        Question.parse({"name": "x", "a": {"dilations": 1}, "b": {"dilation": 2}})
    with pytest.raises(ConfigError, match="two or more options"):
        Choice.parse({"name": "lr", "options": {"0.1": {"other": ""}}})
    with pytest.raises(ConfigError, match=r"option '0.1' names unknown factors \['lr'\]"):
        Choice.parse({"name": "lr", "options": {"0.2": {"other": ""}, "0.1": {"lr": 0.1}}})
    # A choice whose options have not all run picks nothing yet.
    assert choose(Choice.parse(study.choices[0]), collect_results(study)).picked is None
    # Where dilation reaches is the planned arms' geometry, shown before any of an arm's runs finish.
    for spec in study.specs():
        if spec.factors.get("dilation_schedule") == "early":
            (tmp_path / "records" / spec.run_id / "results.json").unlink()
    text = write_question_report(study, tmp_path / "reports").read_text()
    assert "early: rate | early: RF px | early: taps on map |" in text and "9 of 13 planned runs finished" in text
    json.dumps(study.questions)  # plain data, as the YAML holds it


def test_a_question_short_of_its_planned_seeds_is_an_interim_look(tmp_path):
    """Seed 0 of the no-dilation arm missing: both questions asked of it have 5 of their 6 planned
    runs (2 of 3 pairs) and carry no verdict (the figures stay); the GoogLeNet question has all its
    runs and is judged."""
    study = _with_references(_study(tmp_path, seeds=range(3)))
    missing = next(s for s in study.specs() if s.factors.get("dilation") == 1 and s.factors["seed"] == 0)
    (tmp_path / "records" / missing.run_id / "results.json").unlink()
    text = write_question_report(study, tmp_path / "reports").read_text()
    verdicts = {v["question"]: v for v in csv.DictReader((tmp_path / "reports" / "q" / "verdicts.csv").open())}
    late = _reference_lines(text)["late vs none"]  # an effect reported elsewhere is placed, not called
    assert "(n = 2)" in late and "lies above it for now: an interim look, no call yet" in late
    assert "rejected" not in late
    for name in ("late vs none", "early vs none"):
        assert verdicts[name]["n"] == "2" and verdicts[name]["verdict"] == "interim (5 of 6 runs): no verdict"
        assert verdicts[name]["effect"] and verdicts[name]["ci_low"]  # an interim look still shows its figures
        assert verdicts[name]["p_improvement_call"] == "interim"  # and makes no call by the P rule either
    assert verdicts["no aux vs aux"]["n"] == "3" and not verdicts["no aux vs aux"]["verdict"].startswith("interim")


def test_a_welch_question_short_of_its_planned_runs_is_an_interim_look(tmp_path):
    """Unpaired (Welch: 28 px DDSNet against 56 px GoogLeNet, nothing pairs) too: one GoogLeNet run
    missing leaves the question 5 of its 6 runs and no verdict; the complete questions are judged."""
    study = _study(tmp_path, seeds=range(3))
    welch = {
        "name": "late vs googlenet",
        "a": {"network": "googlenet", "other": ""},
        "b": {"dilation_schedule": "late"},
    }
    study = replace(study, questions=[*study.questions, welch])
    missing = next(s for s in study.specs() if s.factors["network"] == "googlenet" and s.factors["seed"] == 2)
    (tmp_path / "records" / missing.run_id / "results.json").unlink()
    write_question_report(study, tmp_path / "reports")
    verdicts = {v["question"]: v for v in csv.DictReader((tmp_path / "reports" / "q" / "verdicts.csv").open())}
    assert verdicts["late vs googlenet"]["paired"] == "False"
    assert verdicts["late vs googlenet"]["verdict"] == "interim (5 of 6 runs): no verdict"
    assert not verdicts["late vs none"]["verdict"].startswith("interim")


def test_model_spec_names_the_network_as_the_benchmarks_do():
    """One spec string for the study's bench rows, the report's img/s join and gpu-study."""
    from lightclf.measure.bench import parse_model_spec

    late = Factors.from_study({"network": "ddsnet", "width_multiplier": 0.25, "small_input": True, "resolution": 28})
    early = Factors.from_study({"network": "ddsnet", "width_multiplier": 0.25, "dilation": 2,
                                "dilation_schedule": "early", "small_input": True})  # fmt: skip
    assert late.model_spec == "ddsnet:width_multiplier=0.25,dilation=2,small_input=true"  # as in committed bench.csv
    assert early.model_spec == "ddsnet:width_multiplier=0.25,dilation=2,dilation_schedule=early,small_input=true"
    assert Factors.from_study({"network": "googlenet", "resolution": 56}).model_spec == "googlenet"
    name, kwargs = parse_model_spec(early.model_spec)
    assert name == "ddsnet" and kwargs["dilation_schedule"] == "early" and kwargs["small_input"] is True


def _row(option: str, seed: int, val: float, test: float = 0.9) -> RunRow:
    overrides = {"model.optimizer.init_args.lr": 0.1} if option == "0.1" else {}
    factors = Factors.from_study({"network": "googlenet", "resolution": 56, "seed": seed, "overrides": overrides})
    return RunRow(factors=factors, run_id=f"{option}-{seed}", top1=test, val_top1=val)


def test_choices_compare_shared_seeds_break_ties_in_order_and_refuse_overlaps():
    from lightclf.errors import ConfigError

    choice = Choice.parse({"name": "lr", "options": {"0.2": {"other": ""}, "0.1": {"other": LR_01}}})
    # 0.2 wins on seeds 1-2 only; seed 0, the one both options ran, favours 0.1.
    runs = [_row("0.2", 0, 0.80), _row("0.2", 1, 0.95), _row("0.2", 2, 0.95), _row("0.1", 0, 0.81)]
    outcome = choose(choice, runs)
    assert outcome.picked == "0.1" and [len(o.runs) for o in outcome.options] == [1, 1]
    assert choose(choice, [_row("0.2", 0, 0.8), _row("0.1", 0, 0.8)]).picked == "0.2"  # tie: listed first
    unrun = choose(choice, [_row("0.2", 0, 0.8), _row("0.1", 0, None)])  # no validation figure: not a run to pick on
    assert unrun.picked is None and unrun.waiting_for == ["0.1"]
    overlapping = Choice.parse({"name": "lr", "options": {"any": {"network": "googlenet"}, "0.1": {"other": LR_01}}})
    with pytest.raises(ConfigError, match="matches options 'any' and '0.1'"):
        choose(overlapping, runs)
    with pytest.raises(ConfigError, match="must be a mapping"):
        Choice.parse({"name": "lr", "where": "googlenet", "options": {"a": {"other": ""}, "b": {"other": LR_01}}})


@pytest.mark.parametrize("name", ["fmnist_dilation", "fmnist_fast"])
def test_committed_reports_regenerate_identically_from_their_records(name, tmp_path, run_here):
    """The generic factors (any config key) kept the DDSNet knobs' meaning: every committed verdict,
    table and run row comes back byte for byte from the committed records."""
    import shutil

    committed = REPO / "reports" / name
    out = tmp_path / name
    out.mkdir()
    if (committed / "bench.csv").exists():  # the study's measured img/s, which the report attaches
        shutil.copy(committed / "bench.csv", out / "bench.csv")
    result = run_here(
        "report",
        "--study",
        f"configs/study/{name}.yaml",
        "--out",
        str(tmp_path),
        "--notes",
        str(committed / "notes.md"),
    )
    assert result.returncode == 0, result.stderr
    for table in ("verdicts.csv", "runs.csv", "runs_per_seed.csv", "report.md"):
        if (committed / table).exists():
            assert (out / table).read_text() == (committed / table).read_text(), table


def test_the_report_shows_fields_per_block_last_gains_and_reported_effects(tmp_path):
    """Three report sections from one constructed study (one report written, to keep the suite's CPU
    flat): the measured field per block; how far the runs still climbed (per-epoch validation read in
    epoch order, mean ± std over seeds, a configuration with a shorter run cut to it and saying so);
    and each effect reported elsewhere placed inside, above or below its question's interval, and
    rejected when outside; and which device trained which runs, where recorded."""
    study = _with_references(_study(tmp_path, seeds=range(3)))
    curve = [0.5, 0.6, 0.7, 0.8, 0.85, 0.88, 0.90, 0.91]  # last epoch +1 point, last quarter (2 epochs) +3
    for spec in study.specs():
        f = Factors.from_study(spec.factors)
        mine = [*curve[:-1], curve[-1] + 0.002 * f.seed]  # the seeds end 0.2 points apart
        if f.dilation_schedule == "early" and f.seed == 2:
            mine = mine[:6]  # stopped after 6 epochs
        RunRecord(folder=tmp_path / "records" / spec.run_id).update(
            val_per_epoch=[{"epoch": e, "val/acc1": v} for e, v in reversed(list(enumerate(mine)))],
            **({"device": "NVIDIA H100"} if f.seed == 2 else {}),  # seed 2 ran on a GPU, the rest unrecorded
        )
    for spec in study.specs():  # the early arm's field grows faster in the first blocks
        folder = tmp_path / "records" / spec.run_id
        erf = json.loads((folder / RunRecord.ERF).read_text())
        grow = 2.0 if Factors.from_study(spec.factors).dilation_schedule == "early" else 1.0
        erf["blocks"] = [{"block": b, "r50": grow * (b + 1), "r95": 2 * grow * (b + 1), "share50": 0.1 * (b + 1),
                          "share95": 0.2, "feature_map": [28, 28]} for b in range(3)]  # fmt: skip
        write_json(folder / RunRecord.ERF, erf)
    text = write_question_report(study, tmp_path / "out").read_text()
    assert "### Per block" in text and (tmp_path / "out" / "q" / "erf_per_block.png").stat().st_size > 5000
    row = next(line for line in text.splitlines() if line.startswith("| 2 | 28x28 |"))
    assert "3.0 ± 0.0 / 30 ± 0%" in row and "6.0 ± 0.0 / 30 ± 0%" in row  # none/late at 3 px, early at 6 px
    assert "| ddsnet w0.25 28px d2 late | 3 | 8 | 91.20 ± 0.20 | +1.20 ± 0.20 | +3.20 ± 0.20 (2 epochs) |" in text
    assert "| ddsnet w0.25 28px d2 early | 3 | 6 (longer runs cut to it) | 88.00 ± 0.00 | +3.00 ± 0.00 " in text
    assert (tmp_path / "out" / "q" / "val_curves.png").stat().st_size > 5000
    assert "| NVIDIA H100 | ddsnet w0.25 28px d2 late | 1 (2) |" in text
    assert "| not recorded (runs before lightclf recorded devices) | ddsnet w0.25 28px d2 late | 2 (0, 1) |" in text
    per_run = list(csv.DictReader((tmp_path / "out" / "q" / "runs.csv").open()))
    assert sorted(r["device"] for r in per_run if r["label"] == "ddsnet w0.25 28px d1") == ["", "", "NVIDIA H100"]
    lines = _reference_lines(text)
    assert "Paper A reported +3.00 points" in lines["late vs none"] and "(n = 3)" in lines["late vs none"]
    assert "so it lies above it: under this protocol an effect that size is rejected" in lines["late vs none"]
    assert "so it lies inside" in lines["early vs none"]
    assert "so it lies below it" in lines["early again"]
    for bad in (
        {"effect": "+1"},
        {"effect": 1, "source": "points, not a fraction"},
        {"effect": float("nan"), "source": "x"},
    ):
        with pytest.raises(ConfigError, match="'x' reference needs effect"):
            Question.parse({"name": "x", "a": {"dilation": 1}, "b": {"dilation": 2}, "reference": bad})


def test_generic_factors_match_and_pair_by_config_key():
    base = {"network": "mobilenetv3_small_050", "resolution": 56, "seed": 1}
    off = Factors.from_study({**base, "model.network_kwargs.drop_path_rate": 0.0})
    on = Factors.from_study({**base, "model.network_kwargs.drop_path_rate": 0.1})
    other_seed = Factors.from_study({**base, "seed": 2, "model.network_kwargs.drop_path_rate": 0.0})
    assert on.matches({"model.network_kwargs.drop_path_rate": 0.1}) and not off.matches(
        {"model.network_kwargs.drop_path_rate": 0.1}
    )
    assert on.label == "mobilenetv3_small_050 56px drop_path_rate=0.1"
    assert on.differs_only_in(off, "model.network_kwargs.drop_path_rate")
    assert not on.differs_only_in(other_seed, "model.network_kwargs.drop_path_rate")  # the seed still pairs
    # Short names are aliases of their config keys; a budget key frees the budget label it makes.
    ddsnet = Factors.from_study({"network": "ddsnet", "width_multiplier": 0.5, "overrides": {"trainer.max_epochs": 8}})
    assert ddsnet.matches({"model.network_kwargs.width_multiplier": 0.5, "trainer.max_epochs": 8})
    longer = Factors.from_study({"network": "ddsnet", "width_multiplier": 0.5, "overrides": {"trainer.max_epochs": 16}})
    assert longer.differs_only_in(ddsnet, "trainer.max_epochs") and not longer.differs_only_in(ddsnet)


def test_the_report_shows_what_changed_from_the_study_it_reruns(tmp_path):
    """A study naming an earlier verdicts.csv gets, per question, the old effect and verdict beside
    the new one; a one-seed row of the old file reads "one seed: no verdict", not "inconclusive"."""
    from dataclasses import replace

    old = tmp_path / "old" / "verdicts.csv"
    old.parent.mkdir()
    old.write_text(
        "question,family,effect,n,paired,ci_low,ci_high,verdict\n"
        "late (old),exploratory,-0.001,9,True,-0.003,0.001,equivalent within ±0.3 points\n"
        "early (old),declared,-0.0057,9,True,-0.0078,-0.0035,worse\n"
        "aux (old),,0.01,1,True,,,inconclusive\n"
    )  # files before the family column leave it out
    mapping = {"late vs none": "late (old)", "early vs none": "early (old)", "no aux vs aux": "aux (old)"}
    study = replace(_study(tmp_path), previous={"verdicts": str(old), "label": "old study", "questions": mapping})
    text = write_question_report(study, tmp_path / "out").read_text()
    section = text.split("## What changed from the old study")[1].split("\n## ")[0]
    assert "[" + str(old) + "](../../old/verdicts.csv)" in section  # linked relative to the report
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in section.splitlines() if line.startswith("| ")}
    late, early, aux = rows["late vs none"], rows["early vs none"], rows["no aux vs aux"]
    assert late[1] == "-0.10 [-0.30, +0.10], 9" and late[4] == "equivalent within ±0.3 points"
    assert late[2] == "equivalent within ±0.3 points (exploratory)"  # asked outside the old family: marked
    assert late[5] == "no |" and early[2] == "worse" and early[4] == "better" and early[5] == "**yes** |"
    assert aux[1] == "+1.00 [-, -], 1" and aux[2] == "one seed: no verdict"


def test_a_previous_block_that_names_an_unasked_question_is_one_line(tmp_path):
    path = tmp_path / "s.yaml"
    previous = {"verdicts": "v.csv", "questions": {"not asked": "old"}}
    path.write_text(yaml.safe_dump({"name": "s", "base_config": str(REPO / "configs/quickstart.yaml"),
                                    "grid": {"network": ["ddsnet"]}, "previous": previous}))  # fmt: skip
    with pytest.raises(ConfigError, match="previous names questions this study does not ask: \\['not asked'\\]"):
        load_study(path)
    path.write_text(yaml.safe_dump({"name": "s", "base_config": str(REPO / "configs/quickstart.yaml"),
                                    "grid": {"network": ["ddsnet"]}, "previous": {"questions": {}}}))  # fmt: skip
    with pytest.raises(ConfigError, match="needs verdicts"):
        load_study(path)


def test_exploratory_questions_are_answered_apart_and_leave_the_declared_family_alone(tmp_path):
    """A question asked after the protocol (or after results) goes in ``exploratory``: its own section
    and Holm family, so adding it never moves the declared questions' adjusted p values."""
    study = _study(tmp_path)
    declared = write_question_report(study, tmp_path / "before")
    before = {r["question"]: r for r in csv.DictReader((declared.parent / "verdicts.csv").open())}
    late = study.questions[0]
    asked_later = replace(study, exploratory=[{**late, "name": "late vs none, asked again later"},
                                              {**study.questions[1], "name": "early vs none, asked again later"}])  # fmt: skip
    path = write_question_report(asked_later, tmp_path / "after")
    text = path.read_text()
    rows = {r["question"]: r for r in csv.DictReader((path.parent / "verdicts.csv").open())}
    for name, row in before.items():  # the declared family: the same p and Holm p as without the extra ones
        assert rows[name]["family"] == "declared" and rows[name]["p_holm"] == row["p_holm"], name
    again = rows["late vs none, asked again later"]
    assert again["family"] == "exploratory" and again["p"] == before["late vs none"]["p"]
    # Holm over the two exploratory questions alone: 2 x p for the smaller p, p itself for the larger.
    early = rows["early vs none, asked again later"]
    assert float(early["p_holm"]) == pytest.approx(2 * float(early["p"]))
    assert float(again["p_holm"]) == pytest.approx(float(again["p"]))
    assert float(before["early vs none"]["p_holm"]) == pytest.approx(3 * float(early["p"]))  # declared: 3 tested
    assert text.index("## Verdicts") < text.index("## Exploratory questions (outside the declared family)")
    assert "| late vs none, asked again later |" in text.split("## Exploratory questions")[1]
    assert "| late vs none, asked again later |" not in text.split("## Exploratory questions")[0]
    # A question in both lists, or an exploratory one naming an unknown factor: one line at load.
    config = {"name": "s", "base_config": str(REPO / "configs/quickstart.yaml"), "grid": {"network": ["ddsnet"]},
              "questions": [late], "exploratory": [late]}  # fmt: skip
    bad = tmp_path / "s.yaml"
    bad.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"\['late vs none'\] both declared and exploratory"):
        load_study(bad)
    bad.write_text(yaml.safe_dump({**config, "exploratory": [{**late, "name": "x", "a": {"dilations": 1}}]}))
    with pytest.raises(ConfigError, match="unknown factors"):
        load_study(bad)
