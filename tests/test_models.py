"""Every registered network builds, gives the right logits, and matches the golden counts."""

from __future__ import annotations

import pytest
import timm
import torch

from lightclf.measure.complexity import count_params
from lightclf.models import PROPOSED_NETWORKS, ConfigError, DDSNet, create_network

# Golden parameter counts (10 classes unless noted), see shared DESIGN.md.
GOLDEN_PARAMS = {
    ("mobilenetv1_100", 10): 3_217_226,
    ("mobilenetv1_100", 1000): 4_231_976,
    ("mobilenetv2_100", 10): 2_236_682,
}
# Our own nets at 10 classes; the undilated separable net is MobileNet v1 exactly.
DDSNET_PARAMS = {
    "ddsnet": 3_217_226,
    "ddsnet_nodilation": 3_217_226,
    "ddsnet_plainconv": 28_279_338,
    "ddsnet_plainconv_nodilation": 28_279_338,
}


@pytest.mark.parametrize("name", PROPOSED_NETWORKS)
@pytest.mark.parametrize(
    "width,resolution,dilation,small_input",
    [(1.0, 224, 2, False), (0.5, 96, 2, False), (0.25, 32, 2, True), (0.75, 28, 3, True), (0.35, 64, 1, False)],
)
def test_proposed_builds_and_classifies(name, width, resolution, dilation, small_input):
    kwargs = {"width_multiplier": width, "small_input": small_input}
    if "nodilation" not in name:
        kwargs["dilation"] = dilation
    model = timm.create_model(name, num_classes=7, in_chans=3, **kwargs).eval()
    model.check_input_size(resolution)
    with torch.no_grad():
        assert model(torch.randn(2, 3, resolution, resolution)).shape == (2, 7)


@pytest.mark.parametrize("name", ["mobilenetv1_100", "mobilenetv2_100", "mobilenetv3_small_100", "googlenet"])
def test_baselines_build_through_the_factory(name):
    model = create_network(name, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_grey_input_channel():
    model = create_network("ddsnet", num_classes=10, in_chans=1, small_input=True, width_multiplier=0.25).eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("key,expected", GOLDEN_PARAMS.items())
def test_timm_golden_params(key, expected):
    name, classes = key
    assert count_params(create_network(name, num_classes=classes)) == expected


def test_googlenet_golden_params():
    assert count_params(create_network("googlenet", 10, aux_logits=False)) == 5_610_154
    assert count_params(create_network("googlenet", 1000, aux_logits=False)) == 6_624_904


@pytest.mark.parametrize("name,expected", DDSNET_PARAMS.items())
def test_ddsnet_golden_params(name, expected):
    assert count_params(create_network(name, num_classes=10)) == expected


def test_undilated_equals_timm_mobilenetv1_per_layer():
    ours = create_network("ddsnet_nodilation", 1000)
    theirs = create_network("mobilenetv1_100", 1000)
    assert count_params(ours) == count_params(theirs) == 4_231_976
    shapes = lambda m: sorted(tuple(p.shape) for p in m.parameters())  # noqa: E731
    assert shapes(ours) == shapes(theirs)


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_dilation_is_free_and_separability_saves(width):
    counts = {d: count_params(create_network("ddsnet", 10, width_multiplier=width, dilation=d)) for d in (1, 2, 4)}
    assert len(set(counts.values())) == 1
    plain = count_params(create_network("ddsnet_plainconv", 10, width_multiplier=width))
    assert plain > 5 * counts[1]


def test_width_multiplier_scales_channels():
    small = create_network("ddsnet", 10, width_multiplier=0.5)
    assert small.num_features == 512 and small.conv_stem[0].out_channels == 16
    assert count_params(small) < count_params(create_network("ddsnet", 10)) / 3


def test_layer_count_is_29():
    model = create_network("ddsnet", 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 27  # stem + 13 x (dw + pw); + pool + FC = 29 layers
    assert isinstance(model.classifier, torch.nn.Linear)


def test_dilation_schedule_and_receptive_field():
    base = create_network("ddsnet_nodilation", 10)
    dilated = create_network("ddsnet", 10, dilation=2)
    wider = create_network("ddsnet", 10, dilation=4)
    assert base.receptive_field() < dilated.receptive_field() < wider.receptive_field()
    assert base.receptive_field() == 315
    schedule = [1] * 13
    schedule[12] = 3
    custom = create_network("ddsnet", 10, dilation_schedule=schedule)
    assert custom.dilations == tuple(schedule)
    assert custom.blocks[12].conv_dw[0].dilation == (3, 3)
    assert custom.blocks[11].conv_dw[0].dilation == (1, 1)


def test_small_input_keeps_last_stage_4x4_at_32px():
    model = create_network("ddsnet", 10, small_input=True)
    assert model.total_stride == 8
    assert model.feature_sizes(32)[-1] == 4
    assert create_network("ddsnet", 10).feature_sizes(224)[-1] == 7


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"width_multiplier": 0}, "width_multiplier"),
        ({"width_multiplier": -0.5}, "width_multiplier"),
        ({"dilation": 0}, "dilation"),
        ({"dilation_schedule": [1, 2]}, "dilation_schedule"),
        ({"drop_rate": 1.5}, "drop_rate"),
    ],
)
def test_impossible_hyperparameters_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        create_network("ddsnet", 10, **kwargs)


def test_resolution_too_small_for_dilation():
    model = create_network("ddsnet", 10)  # stride-32 stem: 32 px ends at 1x1
    with pytest.raises(ConfigError, match="dilation 2 at block"):
        model.check_input_size(32)
    create_network("ddsnet", 10, small_input=True).check_input_size(32)


def test_unknown_network_suggests_close_names():
    with pytest.raises(ConfigError, match="did you mean ddsnet"):
        create_network("ddsnett", 10)


def test_registered_in_timm_with_default_cfg():
    for name in PROPOSED_NETWORKS:
        assert timm.is_model(name)
        model = timm.create_model(name)
        assert isinstance(model, DDSNet) and model.pretrained_cfg["input_size"] == (3, 224, 224)


def test_named_dilation_schedules_and_their_geometry():
    import timm

    from lightclf.geometry import block_geometry, taps_inside

    late = timm.create_model("ddsnet", num_classes=10, width_multiplier=0.25, small_input=True)
    early = timm.create_model(
        "ddsnet", num_classes=10, width_multiplier=0.25, small_input=True, dilation_schedule="early"
    )
    every = timm.create_model(
        "ddsnet", num_classes=10, width_multiplier=0.25, small_input=True, dilation_schedule="all"
    )
    assert late.dilations == (1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 1, 2) and late.dilation_schedule == "late"
    assert early.dilations == (2, 2, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1) and early.dilation_schedule == "early"
    assert every.dilation_schedule == "all" and every.dilations[3] == every.dilations[5] == every.dilations[11] == 1
    # At 28 px the early blocks work on 28x28 and 14x14 maps, the late ones on 7x7 and 4x4.
    sizes = early.feature_sizes(28)
    assert {sizes[i] for i, d in enumerate(early.dilations) if d > 1} == {28, 14}
    assert {sizes[i] for i, d in enumerate(late.dilations) if d > 1} == {7, 4}
    # Same parameters whatever the schedule; the receptive field grows with the rate.
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(late) == count(early) == count(every)
    assert late.receptive_field() == 139 and early.receptive_field() == 93
    assert timm.create_model("ddsnet_nodilation", num_classes=10, small_input=True).dilation_schedule == "none"
    assert set(timm.create_model("ddsnet", num_classes=10, dilation_schedule="none").dilations) == {1}
    # Taps inside the map: rate 2 on a 4x4 map reads padding for 5 of 9 taps on average.
    assert taps_inside(4, 2) == pytest.approx((8 / 12) ** 2) and taps_inside(28, 1) == pytest.approx((82 / 84) ** 2)
    (block12,) = [g for g in block_geometry(28, True, "late") if g.block == 12]
    assert (block12.map_size, block12.dilation, block12.receptive_field) == (4, 2, 139)
    assert block_geometry(28, True, "late")[11].taps_inside is None  # stride 2: not dilated
    with pytest.raises(ConfigError, match="dilation_schedule must be one of"):
        timm.create_model("ddsnet", num_classes=10, dilation_schedule="middle")


def test_narrow_batchnorm_detour_matches_torch_and_keeps_channels_last():
    """The NCHW detour for narrow channels_last BN (a CPU speed fix) changes nothing but rounding:
    same outputs, input gradients, running statistics and state_dict keys, channels_last out."""
    from lightclf.models.ddsnet import BatchNorm2d

    torch.manual_seed(0)
    x = torch.randn(16, 8, 12, 12).to(memory_format=torch.channels_last)
    ours, theirs = BatchNorm2d(8), torch.nn.BatchNorm2d(8)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), theirs(xb)
    assert ya.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ya, yb)
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(ours.running_var, theirs.running_var)
    net = create_network("ddsnet", 10, width_multiplier=0.25, small_input=True)
    assert isinstance(net.conv_stem[1], BatchNorm2d) and net.conv_stem[1].num_features < BatchNorm2d.NARROW_CHANNELS
