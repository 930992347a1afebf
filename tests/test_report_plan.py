"""A study's roles, knobs and claim are data (the study YAML's ``report:``), not code: another
network's study declares its own, and a study that declares none gets no DDSNet verdicts."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO
from lightclf.errors import ConfigError
from lightclf.factors import Factors
from lightclf.study.report import RunRow, write_report
from lightclf.study.report.plan import load_plan
from lightclf.study.spec import load_study

# A user's own study: a timm net's stochastic depth on and off, and a ResNet as the baseline a
# (made-up) paper claims to beat. Nothing under lightclf/ names these networks or this knob.
PLAN = {
    "roles": [
        {"role": "proposed", "where": {"network": "mobilenetv3_small_050", "model.network_kwargs.drop_path_rate": 0.1}},
        {"role": "ablation: no stochastic depth", "where": {"network": "mobilenetv3_small_050"}},
        {"role": "baseline", "where": {}},
    ],
    "knobs": [
        {
            "factor": "model.network_kwargs.drop_path_rate",
            "name": "stochastic depth",
            "compared": "rate {b} vs {a}, same seed",
            "table": ["resolution"],
            "among": "MobileNet v3 small",
        }
    ],  # fmt: skip
    "versus": {
        "where": {"network": "mobilenetv3_small_050"},
        "name": "MNv3-S",
        "label": "MNv3-S with drop path",
        "claim": {
            "baseline": {"network": "resnet18"},
            "title": "The claim against ResNet-18",
            "says": "The paper claims +2 points.",
        },  # fmt: skip
    },
}


def _runs() -> list[RunRow]:
    runs = []
    for seed, (off, on, resnet) in enumerate([(0.80, 0.82, 0.79), (0.81, 0.82, 0.80), (0.79, 0.815, 0.78)]):
        for network, rate, top1, params in (("mobilenetv3_small_050", 0.0, off, 1_000_000),
                                            ("mobilenetv3_small_050", 0.1, on, 1_000_000),
                                            ("resnet18", None, resnet, 11_000_000)):  # fmt: skip
            factors = {"network": network, "resolution": 32, "seed": seed}
            if rate is not None:
                factors["model.network_kwargs.drop_path_rate"] = rate
            runs.append(RunRow(Factors.from_study(factors), f"{network}{rate}{seed}", top1=top1, params=params,
                               macs=5e7))  # fmt: skip
    return runs


def test_a_declared_plan_gives_another_networks_study_its_roles_knob_and_claim(tmp_path):
    text = write_report("sd", _runs(), tmp_path, plan=load_plan(PLAN)).read_text()
    roles: dict[str, str] = {}
    for line in text.split("## Every configuration")[1].split("\n## ")[0].splitlines()[4:]:  # its rows
        roles[line.split(" | ")[0][2:]] = line.split(" | ")[1]
    assert roles["mobilenetv3_small_050 32px drop_path_rate=0.1"] == "proposed"
    assert roles["mobilenetv3_small_050 32px drop_path_rate=0.0"] == "ablation: no stochastic depth"
    assert roles["resnet18 32px"] == "baseline"
    knob = next(line for line in text.splitlines() if line.startswith("- **Stochastic depth**"))
    assert "(rate 0.1 vs 0.0, same seed): +1.83 points" in knob and "n = 3 pairs" in knob
    claim = next(line for line in text.splitlines() if line.startswith("- **The claim against ResNet-18**"))
    assert "MNv3-S with drop path at 32 px vs resnet18 at 32 px" in claim and "81.83 ± 0.29% (n=3)" in claim
    assert "MNv3-S has 10.00M fewer parameters" in claim and claim.endswith("The paper claims +2 points.")
    assert "## Effect of stochastic depth (MobileNet v3 small, means over seeds)" in text
    assert "| MNv3-S with drop path vs resnet18 | unpaired (Welch), 32 px" in text
    assert "DDSNet" not in text and "GoogLeNet" not in text


def test_a_study_that_declares_nothing_gets_tables_not_verdicts(tmp_path):
    text = write_report("plain", _runs(), tmp_path).read_text()
    assert "## Verdicts" not in text and "## Effects" not in text and "| role |" not in text
    assert "## Every configuration" in text and (tmp_path / "accuracy_vs_params.png").exists()  # all plotted


def test_the_ddsnet_studies_share_one_declaration():
    for name in ("fmnist_fast", "fmnist_compression", "cifar10_compression"):
        assert load_study(REPO / "configs" / "study" / f"{name}.yaml").report == "configs/report/ddsnet.yaml"
    plan = load_plan(str(REPO / "configs" / "report" / "ddsnet.yaml"))
    assert plan.role(Factors.from_study({"network": "ddsnet", "dilation": 1})) == "ablation: no dilation"
    assert plan.role(Factors.from_study({"network": "ddsnet"})) == "proposed"
    assert plan.role(Factors.from_study({"network": "googlenet"})) == "baseline"
    assert [k.title for k in plan.knobs] == ["dilation", "separability", "width multiplier", "resolution"]


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ({"rolez": []}, "report has unknown keys \\['rolez'\\]"),
        ({"roles": [{"where": {}}]}, "each role needs a role name"),
        ({"knobs": [{"factor": "colour"}]}, "unknown factors \\['colour'\\]"),
        ({"knobs": [{"factor": "dilation", "a": 1}]}, "needs both a and b"),
        ({"knobs": [{"factor": "dilation", "a": None, "b": 2}]}, "needs both a and b \\(not null\\)"),
        ({"knobs": [{"factor": 5}]}, "each knob needs a factor"),
        ({"knobs": [{"factor": "dilation", "table": "resolution"}]}, "table must be a list"),
        ({"knobs": [{"factor": "dilation", "compared": "{c} vs {a}"}]}, "compared names \\['c'\\]"),
        ({"knobs": [{"factor": "dilation", "cost": "{params}x"}]}, "cost compares a with b"),
        ({"knobs": [{"factor": "dilation", "receptive_field": "no"}]}, "receptive_field must be true or false"),
        ({"versus": {"where": {}}}, "no role is named so"),
        ("missing/plan.yaml", "missing/plan.yaml not found"),
        (".", "cannot be read"),
    ],
)
def test_a_broken_declaration_is_one_line_when_the_study_loads(tmp_path, report, message):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base_config": str(REPO / "configs/quickstart.yaml"),
                                    "grid": {"network": ["ddsnet"]}, "report": report}))  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        load_study(path)
