"""Receptive fields (`cnnzoo.explain.receptive`, `cnnzoo info --receptive-field`).

Hand computations use r' = r + (k - 1) * j, j' = j * s, start' = start - p * j, from the input's
r = 1, j = 1, start = 0 (k kernel, s stride, p padding, dilation 1 everywhere here).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typer.testing import CliRunner

from cnnzoo.cli import app
from cnnzoo.errors import CnnzooError
from cnnzoo.explain.receptive import StageField, receptive_fields
from cnnzoo.models.base import FeatureInfo, FeatureStage
from cnnzoo.registry import create_model, list_models, model_info

CLASSIFIERS = list_models("classification")


def _sizes(fields: list[StageField]) -> list[int]:
    assert all(f.size[0] == f.size[1] for f in fields)
    return [f.size[0] for f in fields]


def _jumps(fields: list[StageField]) -> list[int]:
    assert all(f.jump[0] == f.jump[1] for f in fields)
    return [f.jump[0] for f in fields]


def _starts(fields: list[StageField]) -> list[int]:
    assert all(f.start[0] == f.start[1] for f in fields)
    return [f.start[0] for f in fields]


# -- hand-computed values -----------------------------------------------------------------
def test_lenet5_by_hand() -> None:
    fields = receptive_fields("lenet5")
    assert [f.module for f in fields] == ["c1", "c3"]
    assert [f.channels for f in fields] == [6, 16]
    assert _sizes(fields) == [
        6,  # c1: conv 5x5 pad 2: 1 + 4*1 = 5; max-pool 2x2/2: 5 + 1*1 = 6, j = 2
        16,  # c3: conv 5x5 (no pad) at j=2: 6 + 4*2 = 14; max-pool 2x2/2: 14 + 1*2 = 16, j = 4
    ]
    assert _jumps(fields) == [2, 4]  # 1*1*2; 2*1*2
    assert _starts(fields) == [-2, -2]  # conv pad 2: 0 - 2*1; the later layers have no padding
    assert [f.map_size for f in fields] == [(14, 14), (5, 5)]  # 28 -> 28 -> 14; 14 -> 10 -> 5


def test_vgg16_by_hand() -> None:
    # Each stage is its 3x3 convolutions (pad 1) then the 2x2/2 max-pool that closes it.
    fields = receptive_fields("vgg16")
    assert [f.module for f in fields] == [f"stages.{i}" for i in range(5)]
    assert _sizes(fields) == [
        6,  # conv1_1, conv1_2 at j=1: 1 + 2 + 2 = 5; pool1: 5 + 1 = 6, j = 2
        16,  # conv2_1, conv2_2 at j=2: 6 + 4 + 4 = 14; pool2: 14 + 2 = 16, j = 4
        44,  # conv3_1..3_3 at j=4: 16 + 3*8 = 40; pool3: 40 + 4 = 44, j = 8
        100,  # conv4_1..4_3 at j=8: 44 + 3*16 = 92; pool4: 92 + 8 = 100, j = 16
        212,  # conv5_1..5_3 at j=16: 100 + 3*32 = 196 (conv5_3); pool5: 196 + 16 = 212, j = 32
    ]
    assert _jumps(fields) == [2, 4, 8, 16, 32]
    # starts: each conv moves the start back by 1*j (pad 1), pools have no padding:
    # -2; -2 - 2*2 = -6; -6 - 3*4 = -18; -18 - 3*8 = -42; -42 - 3*16 = -90.
    assert _starts(fields) == [-2, -6, -18, -42, -90]


def test_resnet18_by_hand() -> None:
    fields = receptive_fields("resnet18")
    assert [f.module for f in fields] == ["stem", *(f"stages.{i}" for i in range(4))]
    assert _sizes(fields) == [
        7,  # stem: conv 7x7/2 pad 3: 1 + 6 = 7, j = 2
        # max-pool 3x3/2 pad 1 (not in "stem"): 7 + 2*2 = 11, j = 4
        43,  # stages.0: 2 basic blocks = four 3x3 convs at j=4: 11 + 4*(2*4) = 43
        # stages.1: conv 3x3/2 at j=4: 43 + 8 = 51, j = 8; three more 3x3: 51 + 3*16 = 99
        99,
        # stages.2: 99 + 2*8 = 115, j = 16; 115 + 3*(2*16) = 211
        211,
        # stages.3: 211 + 2*16 = 243, j = 32; 243 + 3*(2*32) = 435 (the 1x1/2 projection
        # shortcuts see less than the 3x3 path, so the union is the 3x3 path)
        435,
    ]
    assert _jumps(fields) == [2, 4, 8, 16, 32]
    # starts: stem -3; pool -3 - 1*2 = -5; each 3x3 (pad 1) moves back by j:
    # -5 - 4*4 = -21; -21 - 4 - 3*8 = -49; -49 - 8 - 3*16 = -105; -105 - 16 - 3*32 = -217
    assert _starts(fields) == [-3, -21, -49, -105, -217]
    # Odd kernels with "same" padding: the first cell is centred on pixel 0,
    # start + (r - 1) / 2 = -3 + 3 = -21 + 21 = ... = -217 + 217 = 0.
    assert all(f.center == (0.0, 0.0) for f in fields)
    assert [f.map_size[0] for f in fields] == [112, 56, 28, 14, 7]


def test_resnet18_small_input_and_coverage() -> None:
    # 32x32 input: the 3x3/1 stem, no max-pool, total stride 8.
    fields = receptive_fields("resnet18", (3, 32, 32), small_input=True)
    # stem 3; stages.0: 3 + 4*2 = 11; stages.1: 11 + 2 + 3*4 = 25; stages.2: 25 + 4 + 3*8 = 53;
    # stages.3: 53 + 8 + 3*16 = 109
    assert _sizes(fields) == [3, 11, 25, 53, 109]
    assert _jumps(fields) == [1, 1, 2, 4, 8]
    # stages.1: 16x16 map, central cell 7 at 7*2 = 14 - 12 = 2 .. 26 of 0..31: 25/32 per side.
    assert fields[2].coverage == pytest.approx((25 / 32) ** 2)
    assert fields[-1].coverage == 1.0  # 109 px around a 4x4 map's cell: all of 32x32


# -- every registered classifier ----------------------------------------------------------
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_fields_grow_with_depth_and_jumps_are_the_reductions(name: str) -> None:
    info = model_info(name)
    fields = receptive_fields(name)
    model_stages = create_model_stages(name)
    assert [f.module for f in fields] == model_stages.module_names()
    assert [f.channels for f in fields] == model_stages.channels()
    sizes = _sizes(fields)
    assert sizes == sorted(set(sizes)), sizes  # strictly growing with depth
    assert _jumps(fields) == model_stages.reduction()
    assert all(f.jump == (f.reduction, f.reduction) for f in fields)
    assert all(f.input_size == info.input_size[1:] for f in fields)
    coverage = [f.coverage for f in fields]
    assert all(0 < c <= 1 for c in coverage)


@pytest.mark.parametrize("name", ["resnet18", "plain34", "googlenet", "mobilenet_v2"])
def test_small_input_variants_keep_jump_equal_to_reduction(name: str) -> None:
    fields = receptive_fields(name, (3, 32, 32), small_input=True)
    stages = create_model_stages(name, small_input=True)
    assert _jumps(fields) == stages.reduction()
    assert _sizes(fields) == sorted(set(_sizes(fields)))


def create_model_stages(name: str, **kwargs: object) -> FeatureInfo:
    with torch.device("meta"):
        return create_model(name, **kwargs).feature_info


def test_deep_models_take_well_under_a_second() -> None:
    import time

    receptive_fields("resnet152")  # the registry is imported by now
    start = time.perf_counter()
    deep = receptive_fields("resnet152")
    vgg = receptive_fields("vgg16")
    assert time.perf_counter() - start < 2.0
    # ResNet-152 (v1.5, stride on the 3x3): stem 7; pool 11; stages.0: 3 blocks x one 3x3
    # at j=4: 11 + 3*8 = 35; stages.1: 35 + 8 + 7*16 = 155; stages.2: 155 + 16 + 35*32 = 1291;
    # stages.3: 1291 + 32 + 2*64 = 1451.
    assert _sizes(deep) == [7, 35, 155, 1291, 1451]
    assert _sizes(vgg)[-1] == 212


def test_unet_by_hand() -> None:
    """U-Net (no backbone): its own feature_info, two 3x3 convs per level, 2x2 pools."""
    fields = receptive_fields("unet")
    assert [f.module for f in fields] == ["inc", "down.0", "down.1", "down.2", "down.3"]
    # inc: 1 + 2 + 2 = 5; each level: pool +1*j (j doubles), then two 3x3 at the new j.
    assert _sizes(fields) == [5, 14, 32, 68, 140]
    assert _jumps(fields) == [1, 2, 4, 8, 16]


def test_segmenters_and_detectors_use_their_backbone_stages() -> None:
    """FCN-8s reads VGG-16's pool3/pool4/pool5 (44, 100, 212 px: VGG-16 by hand above);
    YOLOv3's Darknet-53 ends at 32 px cells. Stage names are paths from the model's root."""
    fcn = receptive_fields("fcn8s")
    assert all(f.module.startswith("backbone.") for f in fcn)
    assert _sizes(fcn) == [44, 100, 212] and _jumps(fcn) == [8, 16, 32]
    yolo = receptive_fields("yolov3")
    assert _jumps(yolo) == [8, 16, 32]
    assert _sizes(yolo)[0] < _sizes(yolo)[1] < _sizes(yolo)[2]


# -- the exact gradient probe as an independent check ----------------------------------------
class _StopError(Exception):
    pass


def _probe(name: str, stage: int, side: int) -> list[tuple[int, int]]:
    """Input extent (first, last pixel per axis) the central cell of ``stage`` depends on.

    Constant positive weights, identity batch norm, max-pools as average pools of the same
    geometry: every path carries gradient, so the non-zero input gradient is the union of the
    fields of all paths (the theoretical field). float64, weights 1/fan-in: no underflow and
    no saturation (ReLU6).
    """
    model = create_model(name, num_classes=2).double().eval()
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):
                assert child.dilation in (1, (1, 1))
                pool = nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode)
                setattr(parent, child_name, pool)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()  # running mean 0, variance 1, weight 1, bias 0
    channels = model_info(name).input_size[0]
    x = torch.full((1, channels, side, side), 0.01, dtype=torch.float64, requires_grad=True)
    maps: list[Tensor] = []

    def stop(module: nn.Module, args: object, output: Tensor) -> None:
        maps.append(output)
        raise _StopError

    model.get_submodule(model.feature_info[stage].module).register_forward_hook(stop)
    with pytest.raises(_StopError):
        model(x)
    out = maps[0]
    out[0, :, (out.shape[2] - 1) // 2, (out.shape[3] - 1) // 2].sum().backward()
    seen = x.grad[0].abs().sum(0) > 0
    extents = []
    for axis in (1, 0):  # rows (height), then columns (width)
        hit = seen.any(axis).nonzero().flatten()
        extents.append((int(hit[0]), int(hit[-1])))
    return extents


PROBES = [
    ("lenet5", 1),
    ("resnet20", 3),  # option-A shortcuts: strided slicing and zero channels
    ("resnet18", 2),
    ("resnet50", 2),  # bottlenecks, stride on the 3x3, projection shortcuts
    ("googlenet", 2),  # inception branches: 1x1, 3x3, "5x5" (3x3 here), pool + 1x1
    ("shufflenet_v1", 2),  # average-pool shortcut concatenated, grouped convs
    ("shufflenet_v2_x0_5", 2),  # channel split, concatenation, channel shuffle
    ("mobilenet_v2", 2),  # depthwise convolutions, ReLU6, inverted residuals
    ("squeezenet1_1", 3),  # unpadded stem, ceil-mode pools, fire modules
    ("alexnet", 1),
]


@pytest.mark.parametrize(("name", "stage"), PROBES)
def test_analytic_fields_match_the_gradient_probe(name: str, stage: int) -> None:
    torch.manual_seed(0)
    channels = model_info(name).input_size[0]
    # The smallest input (in steps of 8 px) on which the central cell's field lies inside
    # the image with a margin of a pixel, so that a larger probed field would show.
    side = max(16, model_info(name).min_input_size)
    while True:
        fields = receptive_fields(name, (channels, side, side))
        f = fields[stage]
        low = [f.start[a] + (f.map_size[a] - 1) // 2 * f.jump[a] for a in (0, 1)]
        if min(low) >= 1 and max(lo + s - 1 for lo, s in zip(low, f.size, strict=True)) <= side - 2:
            break
        side += 8
    assert _probe(name, stage, side) == [
        (lo, lo + s - 1) for lo, s in zip(low, f.size, strict=True)
    ]
    for shallower in range(stage):  # deeper stages see more
        assert fields[shallower].size < f.size


# -- generic models, rules and refusals -----------------------------------------------------
class _Tiny(nn.Module):
    """Two stages: an anisotropic strided stage, then two branches of different padding."""

    def __init__(self, upsample: bool = False) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, (1, 7), stride=(1, 2), padding=(0, 3))
        self.b3 = nn.Conv2d(4, 4, 3, padding=1)
        self.b5 = nn.Conv2d(4, 4, 5, padding=0)
        self.upsample = upsample
        self.feature_info = FeatureInfo([FeatureStage("a", 4, 2), FeatureStage("b5", 4, 2)])

    def forward(self, x: Tensor) -> Tensor:
        x = self.a(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0)
        # b5 without padding, then padded back by 2 on each side to b3's size.
        return self.b3(x) + F.pad(self.b5(x), (2, 2, 2, 2))


def test_any_module_with_feature_info_per_axis_fields() -> None:
    model = _Tiny().train()
    weight = model.a.weight
    fields = receptive_fields(model, (1, 20, 20))
    # a: height 1x1/1 -> 1, j 1; width 1x7/2 pad 3 -> 7, j 2, start -3
    assert fields[0].size == (1, 7) and fields[0].jump == (1, 2) and fields[0].start == (0, -3)
    # b5 (its output, before F.pad): height 1 + 4*1 = 5, start 0; width 7 + 4*2 = 15, start -3
    assert fields[1].size == (5, 15) and fields[1].start == (0, -3)
    assert model.training and model.a.weight is weight and weight.device.type == "cpu"


def test_union_of_branches_takes_lowest_start_and_highest_end() -> None:
    from cnnzoo.explain.receptive import _Axis, _union

    a = (_Axis(3, 2, -1), _Axis(3, 2, -1))
    b = (_Axis(5, 2, 0), _Axis(1, 2, 0))
    assert _union([a, b]) == (_Axis(6, 2, -1), _Axis(3, 2, -1))  # -1..4 and -1..1


def test_operation_without_a_rule_is_refused() -> None:
    with pytest.raises(CnnzooError, match="interpolate") as err:
        receptive_fields(_Tiny(upsample=True), (1, 20, 20))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        ("resnet5", {}, "unknown model 'resnet5'"),
        ("dcgan", {}, "'dcgan' has no feature_info"),
        ("vgg16", {"input_size": (3, 8, 8)}, "does not run on a 3x8x8 input"),
        ("vgg16", {"input_size": (3, 0, 8)}, "three positive ints"),
        (nn.Conv2d(3, 3, 3), {}, "has no feature_info"),
        (_Tiny(), {"small_input": True}, "model given by name"),
    ],
)
def test_bad_input_is_a_one_line_error(model: object, kwargs: dict, message: str) -> None:
    with pytest.raises(CnnzooError, match=message) as err:
        receptive_fields(model, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


# -- command line ---------------------------------------------------------------------------
def test_cli_prints_the_table_in_80_columns() -> None:
    result = CliRunner().invoke(app, ["info", "resnet18", "--depth", "1", "--receptive-field"])
    assert result.exit_code == 0, result.output
    table = result.output[result.output.index("resnet18 receptive fields") :]
    assert "stages.3" in table and "435" in table and "194%" in table and "100%" in table
    assert "│ stages.2 │      256 │   16 │   211 │" in table
    assert max(len(line) for line in table.splitlines()) <= 80


@pytest.mark.parametrize(
    ("name", "message"), [("dcgan", "has no feature_info"), ("resnet5", "unknown model")]
)
def test_cli_refusal_is_one_line_and_exit_2(name: str, message: str) -> None:
    result = CliRunner().invoke(app, ["info", name, "--receptive-field"])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
