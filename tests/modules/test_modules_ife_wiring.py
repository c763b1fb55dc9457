"""The one IFE wiring (issue 12 item 2): :class:`IFESpec` + :func:`build_ife`, used by unet, nnunet, sinet_v2 and
deeplabv3plus.

Expected widths are worked by hand from ``C + floor(r C)`` (docs/ife.md); the state-dict fingerprints were
taken from the four networks as they were wired before this refactor (git HEAD 66088f0, where UNet used a
subclass + hook, nnU-Net a ModuleDict, SINet-V2 a ModuleList with Identity, DeepLabV3+ optional attributes),
so a checkpoint saved then still loads strictly.
"""
from __future__ import annotations

import hashlib

import pytest
import torch

from medseg.errors import UserError
from medseg.models import create_model
from medseg.modules.ife import IFE, IFEPoints, IFESpec, IFESpecError, build_ife


def spec(levels=(0, 1, 2), ratios=(0.5, 0.0, 1.0), **kw) -> IFESpec:
    return IFESpec("curvature", tuple(levels), tuple(ratios), **kw)


# ------------------------------------------------------------------------------------------ the helper
def test_widths_follow_c_plus_floor_rc_and_ratio_0_means_no_ife():
    points, widths = build_ife(spec(), [8, 16, 32], ["p0", "p1", "p2"])
    assert isinstance(points, IFEPoints) and sorted(points) == ["0", "2"]  # level 1 has ratio 0: no module
    assert widths == [8 + 4, 16, 32 + 32]
    assert [points[k].name for k in ("0", "2")] == ["p0", "p2"]
    x = torch.randn(2, 16, 6, 6)
    assert points.enhance(1, x) is x  # ratio 0: the feature passes unchanged
    assert points.enhance(0, torch.randn(2, 8, 6, 6)).shape == (2, 12, 6, 6)


def test_levels_not_listed_keep_their_width_and_no_spec_means_no_ife():
    points, widths = build_ife(spec(levels=(1,), ratios=(0.75,)), [8, 16, 32], ["a", "b", "c"])
    assert sorted(points) == ["1"] and widths == [8, 16 + 12, 32]
    points, widths = build_ife(None, [8, 16], ["a", "b"])
    assert len(points) == 0 and widths == [8, 16]


def test_order_reaches_the_modules():
    points, _ = build_ife(spec(levels=(0,), ratios=(0.5,)), [4], ["a"], order="selected_first")
    x = torch.randn(1, 4, 5, 5)
    y = points.enhance(0, x)
    assert points["0"].order == "selected_first"
    torch.testing.assert_close(y[:, 2:], x)  # [selected, raw]: the raw map comes last


@pytest.mark.parametrize("level", [3, -1])
def test_a_level_out_of_range_names_the_key_and_the_valid_range(level):
    with pytest.raises(IFESpecError, match=rf"net: ife_levels entry {level} has no skip connection; valid "
                                           r"entries are 0\.\.2 \(0 = net\.skip0\)"):
        build_ife(spec(levels=(0, level), ratios=(0.5, 0.5), model="net"), [8, 16, 32],
                  ["net.skip0", "net.skip1", "net.skip2"], point="skip connection")


def test_one_based_levels_are_reported_as_the_user_wrote_them():
    s = IFESpec.from_kwargs("nnunet", "entropy", (0.5,), (4,), levels_key="ife_stages", levels_base=1)
    assert s.levels == (3,) and s.user_levels == (4,)
    with pytest.raises(IFESpecError, match=r"ife_stages entry 4 has no IFE point; valid entries are 1\.\.3"):
        build_ife(s, [8, 16, 32], ["s1", "s2", "s3"])


@pytest.mark.parametrize("kwargs,key", [
    ({"ife": "curv"}, r"ife='curv' is not an IFE score \(valid: curvature, entropy"),
    ({"ife_entropy_mode": "hist"}, r"ife_entropy_mode='hist' is unknown \(valid: hist1d"),
    ({"ife_ratio": (0.5,)}, r"ife_ratio \(0\.5,\) needs one ratio per entry of ife_levels \(1, 2\)"),
    ({"ife_ratio": (0.5, 1.5)}, r"ife_ratio\[1\] = 1\.5 must be a number in \[0, 1\]"),
    ({"ife_ratio": (0.5, "a")}, r"ife_ratio\[1\] = 'a' must be a number"),
    ({"ife_ratio": 0.5}, r"ife_ratio=0\.5 must be a list"),
    ({"ife_levels": (1, 1)}, r"ife_levels \(1, 1\) names a level twice"),
    ({"ife_levels": (1, 1.5)}, r"ife_levels \(1, 1\.5\) must be integers"),
])
def test_spec_errors_name_the_key(kwargs, key):
    opts = {"ife": "curvature", "ife_ratio": (0.5, 0.5), "ife_levels": (1, 2), **kwargs}
    with pytest.raises(IFESpecError, match=rf"^unet: {key}") as info:
        IFESpec.from_kwargs("unet", opts["ife"], opts["ife_ratio"], opts["ife_levels"],
                            opts.get("ife_entropy_mode", "hist1d"))
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


def test_no_ife_spellings_give_no_spec():
    assert all(IFESpec.from_kwargs("unet", off, (2.0,), (9,)) is None for off in (None, "none", "off"))


@pytest.mark.parametrize("name,kwargs,match", [
    ("unet", {"base": 4, "depth": 2, "ife": "entropy", "ife_levels": (0, 2), "ife_ratio": (0.5, 0.5)},
     r"unet: ife_levels entry 2 has no skip connection; valid entries are 0\.\.1"),
    ("nnunet", {"patch_size": (16, 16), "base": 4, "ife": "entropy", "ife_stages": (0,), "ife_ratio": (0.5,)},
     r"nnunet: ife_stages entry 0 has no skip connection; valid entries are 1\.\."),
    ("nnunet", {"patch_size": (16, 16), "base": 4, "ife": "entropy", "ife_stages": (2,), "ife_levels": (1,)},
     r"nnunet: give ife_levels \(1,\) \(0-based\) or ife_stages \(2,\)"),
    ("sinet_v2", {"encoder": "resnet10t", "channel": 8, "ife": "entropy", "ife_ratio": (0.5, 0.5)},
     r"sinet_v2: ife_ratio \(0\.5, 0\.5\) needs one ratio per IFE point \(sinet\.tem8, sinet\.tem16, sinet\.tem32\)"),
    ("deeplabv3plus", {"encoder": "resnet10t", "ife": "curvature", "ife_ratio": (0.5, 0.5, 0.5)},
     r"deeplabv3plus: ife_ratio .* needs one ratio per IFE point \(deeplab\.low_level, deeplab\.aspp\)"),
])
def test_factories_report_spec_errors_with_the_key(name, kwargs, match):
    with pytest.raises(IFESpecError, match=match):
        create_model(name, **kwargs)


def test_nnunet_old_one_based_stages_equal_the_new_levels():
    kw = {"patch_size": (32, 32), "base": 8, "ife": "curvature", "ife_ratio": (0.75, 0.5)}
    old, new, default = (create_model("nnunet", **kw, **extra) for extra in
                         ({"ife_stages": (2, 3)}, {"ife_levels": (1, 2)}, {}))
    shapes = [{k: v.shape for k, v in m.state_dict().items()} for m in (old, new, default)]
    assert shapes[0] == shapes[1] == shapes[2]
    assert [m.name for m in old.ife.values()] == [m.name for m in new.ife.values()] == ["nnunet.stage2",
                                                                                         "nnunet.stage3"]


# ------------------------------------------------------------------- the four networks: one wiring, same keys
def fingerprint(model: torch.nn.Module) -> str:
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(model.state_dict().items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


# config -> (sha256 of the sorted "key:shape" lines before the refactor, number of keys, IFE point names)
BEFORE = {
    "unet_c": ("unet", {"base": 8, "depth": 3, "ife": "curvature", "ife_ratio": (0.75, 0.5)},
               "d933d7b3b5cf7231", 92, ["unet.skip1", "unet.skip2"]),
    "unet_lv0": ("unet", {"base": 8, "depth": 3, "ife": "entropy", "ife_ratio": (0.5, 0, 1.0), "ife_levels": (0, 1, 2)},
                 "962f8324c73de9a8", 92, ["unet.skip0", "unet.skip2"]),
    "unet_plain": ("unet", {"base": 8, "depth": 3}, "f46465769d0888ac", 92, []),
    "unet3d_e": ("unet3d", {"base": 4, "depth": 3, "ife": "entropy"}, "32260cc71942bff3", 50,
                 ["unet.skip1", "unet.skip2"]),
    "nnunet_c": ("nnunet", {"in_channels": 3, "patch_size": (32, 32), "base": 8, "ife": "curvature"},
                 "b412ecabf2265d33", 49, ["nnunet.stage2", "nnunet.stage3"]),
    "nnunet_s1": ("nnunet", {"in_channels": 3, "patch_size": (32, 32), "base": 8, "ife": "entropy",
                             "ife_stages": (1, 3), "ife_ratio": (0.5, 0.25)},
                  "b32fd065585e82e3", 49, ["nnunet.stage1", "nnunet.stage3"]),
    "nnunet_plain": ("nnunet", {"in_channels": 3, "patch_size": (32, 32), "base": 8}, "545efac6ea462486", 49, []),
    "sinet_c": ("sinet_v2", {"encoder": "resnet10t", "channel": 8, "ife": "curvature"}, "d170eb9612a53dbb", 446,
                ["sinet.tem8", "sinet.tem16", "sinet.tem32"]),
    "sinet_0": ("sinet_v2", {"encoder": "resnet10t", "channel": 8, "ife": "entropy", "ife_ratio": (0, 0.5, 1.0)},
                "7d065d71084eae73", 444, ["sinet.tem16", "sinet.tem32"]),
    "sinet_plain": ("sinet_v2", {"encoder": "resnet10t", "channel": 8}, "6dc06afb7a44c178", 440, []),
    "deeplab_c": ("deeplabv3plus", {"encoder": "resnet10t", "ife": "curvature"}, "eebc060e4f378d43", 140,
                  ["deeplab.low_level", "deeplab.aspp"]),
    "deeplab_low": ("deeplabv3plus", {"encoder": "resnet10t", "ife": "entropy", "ife_aspp": False,
                                      "ife_ratio": (0.5, 0.25)}, "c56712caa015c3b0", 140, ["deeplab.low_level"]),
    "deeplab_aspp": ("deeplabv3plus", {"encoder": "resnet10t", "ife": "curvature", "ife_ratio": (0, 0.5)},
                     "62fe3825088d6a31", 140, ["deeplab.aspp"]),
    "deeplab_plain": ("deeplabv3plus", {"encoder": "resnet10t"}, "2df671d2dabf89d2", 140, []),
}


@pytest.mark.parametrize("config", sorted(BEFORE))
def test_state_dict_keys_and_shapes_are_those_before_the_refactor(config):
    name, kwargs, sha, n_keys, points = BEFORE[config]
    model = create_model(name, **kwargs)
    assert isinstance(model.ife, IFEPoints), f"{name} is not wired through build_ife"
    assert [m.name for m in model.ife.values()] == points
    order = "raw_first" if name.startswith(("unet", "nnunet")) else "selected_first"  # as the paper's code
    assert all(isinstance(m, IFE) and m.order == order for m in model.ife.values())
    assert not list(model.ife.state_dict()), "IFE holds no checkpointed tensors"
    assert len(model.state_dict()) == n_keys and fingerprint(model) == sha


def test_consuming_layers_keep_the_paper_widths():
    """Hand-worked: UNet int(C(2+r)); nnU-Net 2C+floor(rC); SINet 8+floor(8r); DeepLab 48(1+r)+256(1+r)."""
    unet = create_model("unet", base=8, depth=3, ife="curvature", ife_ratio=(0.75, 0.5))
    assert [d[0].in_channels for d in unet.decoders] == [int(32 * 2.5), int(16 * 2.75), 16]  # widths 8..64
    assert [unet.decoder_in_channels(lv) for lv in (2, 1, 0)] == [80, 44, 16]
    nn_ = create_model("nnunet", in_channels=3, patch_size=(32, 32), base=8, ife="curvature")
    assert [d.conv1.conv.in_channels for d in nn_.decoders] == [32 + 16 + 32, 16 + 12 + 16, 16]
    sinet = create_model("sinet_v2", encoder="resnet10t", channel=8, ife="entropy", ife_ratio=(0, 0.5, 1.0))
    assert sinet.rs3.first_conv is None and [rs.first_conv.in_channels for rs in (sinet.rs4, sinet.rs5)] == [12, 16]
    deeplab = create_model("deeplabv3plus", encoder="resnet10t", ife="curvature", ife_ratio=(0, 0.5))
    assert deeplab.decoder_in_channels == 48 + 256 + 128
