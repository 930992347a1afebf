"""Cost figures: golden MACs, analytic = counter, receptive field, bench CSV schema."""

from __future__ import annotations

import pytest
import torch

from lightclf.measure.bench import CSV_FIELDS, parse_model_spec, read_csv, run_bench, write_csv
from lightclf.measure.complexity import count_macs, ddsnet_macs, measure_complexity
from lightclf.models import create_network

# MobileNet papers count conv + FC multiply-adds: v1 569M (Howard et al. 2017, Table 8), v2 300M.
PAPER_MACS = {"mobilenetv1_100": 569e6, "mobilenetv2_100": 300e6}
# timm's published GMACs (fvcore convention: BatchNorm elements count as MACs).
TIMM_GMACS = {"mobilenetv1_100": 0.58, "mobilenetv2_100": 0.31}


@pytest.mark.parametrize("name", PAPER_MACS)
def test_macs_match_the_papers(name):
    macs = count_macs(create_network(name, 1000).eval(), 224)
    assert macs == pytest.approx(PAPER_MACS[name], rel=0.005)


@pytest.mark.parametrize("name", TIMM_GMACS)
def test_macs_match_timm_published_within_2_percent(name):
    macs = count_macs(create_network(name, 1000).eval(), 224, count_norm=True)
    assert macs / 1e9 == pytest.approx(TIMM_GMACS[name], rel=0.02)


@pytest.mark.parametrize(
    "name,kwargs,resolution",
    [
        ("ddsnet", {}, 224),
        ("ddsnet", {"width_multiplier": 0.5, "small_input": True}, 32),
        ("ddsnet_nodilation", {"width_multiplier": 0.75}, 160),
        ("ddsnet_plainconv", {"width_multiplier": 0.25, "small_input": True}, 28),
        ("ddsnet_plainconv_nodilation", {"width_multiplier": 1.0}, 96),
    ],
)
def test_analytic_macs_agree_with_the_counter(name, kwargs, resolution):
    model = create_network(name, 10, **kwargs)
    assert ddsnet_macs(model, resolution) == count_macs(model, resolution)


def test_undilated_equals_timm_mobilenetv1_macs():
    assert count_macs(create_network("ddsnet_nodilation", 1000), 224) == count_macs(
        create_network("mobilenetv1_100", 1000), 224
    )


def test_dilation_widens_receptive_field_at_equal_cost():
    figures = {d: measure_complexity(create_network("ddsnet", 10, dilation=d), 224) for d in (1, 2, 3)}
    assert figures[1].params == figures[2].params == figures[3].params
    assert figures[1].macs == figures[2].macs == figures[3].macs
    assert figures[1].receptive_field < figures[2].receptive_field < figures[3].receptive_field
    assert figures[1].receptive_field == 315  # MobileNet v1's theoretical receptive field


def test_size_mb_and_googlenet_deployed_params():
    figures = measure_complexity(create_network("googlenet", 1000), 224)
    assert figures.params == 6_624_904  # aux heads are training-only
    assert figures.train_params > figures.params
    assert figures.size_mb == pytest.approx(figures.params * 4 / 1e6, rel=0.01)
    assert figures.receptive_field is None
    assert figures.macs / 1e9 == pytest.approx(1.5, rel=0.01)


def test_macs_scale_with_width_and_resolution():
    base = count_macs(create_network("ddsnet", 10), 224)
    assert count_macs(create_network("ddsnet", 10, width_multiplier=0.5), 224) < base / 3
    assert count_macs(create_network("ddsnet", 10), 448) == pytest.approx(4 * base, rel=1e-3)  # every map 2x wider


def test_model_spec_parsing():
    assert parse_model_spec("ddsnet:width_multiplier=0.5,small_input=true,dilation=2") == (
        "ddsnet",
        {"width_multiplier": 0.5, "small_input": True, "dilation": 2},
    )
    assert parse_model_spec("googlenet") == ("googlenet", {})


def test_bench_csv_schema(tmp_path):
    rows = run_bench(
        ["ddsnet:width_multiplier=0.25,small_input=true", "mobilenetv3_small_050"],
        [32],
        ["contiguous", "channels_last"],
        ["eager"],
        batch_size=4,
        repeats=2,
        warmup=1,
        iters=2,
        log=lambda m: None,
    )
    path = write_csv(rows, tmp_path / "bench.csv")
    read = read_csv(path)
    assert list(read[0]) == CSV_FIELDS
    assert len(read) == 4
    assert {(r["network"].split(":")[0], r["memory_format"]) for r in read} == {
        ("ddsnet", "contiguous"),
        ("ddsnet", "channels_last"),
        ("mobilenetv3_small_050", "contiguous"),
        ("mobilenetv3_small_050", "channels_last"),
    }
    for r in read:
        assert r["images_per_s"] > 0 and r["latency_ms"] == pytest.approx(1000 / r["images_per_s"], rel=1e-2)
        assert r["repeats"] == 2 and r["batch_size"] == 4 and r["macs"] > 0


def test_bench_skips_impossible_configs():
    """An impossible configuration is skipped with a reason; when nothing is left, bench refuses
    (an empty run would overwrite the CSV with nothing)."""
    from lightclf.errors import ConfigError

    messages = []
    rows = run_bench(["ddsnet", "ddsnet_nodilation"], [32], ["contiguous"], batch_size=2, repeats=1, warmup=1,
                     iters=1, log=messages.append)  # fmt: skip
    assert [r.network for r in rows] == ["ddsnet_nodilation"] and "dilation 2" in messages[0]
    with pytest.raises(ConfigError, match="no model could be built"):
        run_bench(["ddsnet"], [32], ["contiguous"], batch_size=2, repeats=1, warmup=1, iters=1, log=messages.append)


def test_count_correct_is_top_k_with_k_capped_at_the_classes():
    from lightclf.measure.accuracy import count_correct

    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    targets = torch.tensor([1, 2, 0])
    # row 0: top-1 hit; row 1: target ranked 2nd; row 2: target ranked last (3rd)
    assert count_correct(logits, targets, (1, 2, 5)) == [1, 2, 3]
