"""Sliding-window inference (``medseg.engine.sliding_window``): whole-volume equality, mirroring TTA,
MONAI's ``sliding_window_inference`` (gaussian) as the oracle, and the memory bound of the aggregation."""
from __future__ import annotations

import itertools
import os

import pytest
import torch
import torch.nn as nn

from medseg.engine.sliding_window import sliding_window_inference, window_starts


def small_net(cin: int = 2, k: int = 5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(cin, 6, 3, padding=1), nn.ReLU(), nn.Conv3d(6, k, 3, padding=1)).eval()


def symmetric_net(cin: int = 1, k: int = 3) -> nn.Module:
    """Convolutions whose kernels are invariant under every flip: ``f(flip(x)) = flip(f(x))``."""
    net = small_net(cin, k, seed=1)
    with torch.no_grad():
        for conv in (net[0], net[2]):
            w = conv.weight
            conv.weight.copy_(sum(w.flip(d) if d else w for r in range(4)
                                  for d in itertools.combinations((2, 3, 4), r)) / 8)
    return net


def test_window_covering_the_volume_equals_whole_volume_forward() -> None:
    net = small_net()
    x = torch.randn(2, 2, 12, 16, 20)
    with torch.no_grad():
        whole = net(x)
    out = sliding_window_inference(x, net, (12, 16, 20), overlap=0.5)
    torch.testing.assert_close(out, whole, rtol=1e-5, atol=1e-5)
    labels = sliding_window_inference(x, net, (12, 16, 20), output="labels", acc_dtype=torch.float32)
    assert torch.equal(labels.long(), whole.argmax(1))


@pytest.mark.parametrize("shape,roi,overlap,batch", [
    ((2, 2, 22, 17, 13), (8, 8, 8), 0.25, 3),
    ((1, 2, 14, 14, 18), (8, 6, 16), 0.5, 1),
    ((1, 2, 6, 12, 12), (8, 8, 8), 0.25, 4),  # shorter than the window along D: padded as MONAI pads
])
def test_equals_monai_gaussian(shape: tuple, roi: tuple, overlap: float, batch: int) -> None:
    from monai.inferers import sliding_window_inference as monai_sw

    net = small_net()
    x = torch.randn(shape)
    with torch.no_grad():
        ref = monai_sw(x, roi, batch, net, overlap=overlap, mode="gaussian")
    with pytest.warns(UserWarning, match="smaller than the window") if shape[2] < roi[0] else _no_warning():
        out = sliding_window_inference(x, net, roi, overlap, batch)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    labels = sliding_window_inference(x, net, roi, overlap, batch, output="labels", acc_dtype=torch.float32)
    assert torch.equal(labels.long(), ref.argmax(1))
    half = sliding_window_inference(x, net, roi, overlap, batch, output="labels", acc_dtype=torch.float16)
    assert (half.long() == ref.argmax(1)).float().mean() > 0.999  # near-ties may flip in float16


class _no_warning:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_float16_labels_for_100_classes_agree_with_float32() -> None:
    """The default float16 slab for many classes (with the per-voxel shift) keeps the float32 argmax
    on all but a few near-tie voxels; unshifted float16 sums lose ~0.2 % of voxels on this case."""
    net = small_net(1, 100, seed=3)
    x = torch.randn(1, 1, 24, 24, 24)
    exact = sliding_window_inference(x, net, (16, 16, 16), 0.5, 2, output="labels", acc_dtype=torch.float32)
    stats: dict[str, int] = {}
    half = sliding_window_inference(x, net, (16, 16, 16), 0.5, 2, output="labels", stats=stats)
    assert stats["buffer_bytes"] == 100 * 16 * 24 * 24 * 2 + 16 * 24 * 24 * 4  # float16 slab by default
    assert (half != exact).float().mean() < 3e-4


def test_window_starts_match_monai_grid() -> None:
    from monai.data.utils import dense_patch_slices

    for size, roi, overlap in [(40, 16, 0.25), (33, 16, 0.5), (16, 16, 0.5), (129, 32, 0.1)]:
        step = roi if roi == size else int(roi * (1 - overlap))
        ref = sorted({s[0].start for s in dense_patch_slices((size,), (roi,), (step,))})
        assert window_starts(size, roi, overlap) == ref


def test_mirroring_tta_of_mirror_symmetric_model_equals_no_tta() -> None:
    net = symmetric_net()
    x = torch.randn(1, 1, 20, 18, 16)
    plain = sliding_window_inference(x, net, (16, 16, 16), 0.5)
    tta = sliding_window_inference(x, net, (16, 16, 16), 0.5, mirror_axes=(0, 1, 2))
    torch.testing.assert_close(tta, plain, rtol=1e-5, atol=1e-5)
    # the TTA passes really run: for a model that is not symmetric the result changes
    other = small_net(1, 3)
    assert not torch.allclose(sliding_window_inference(x, other, (16, 16, 16), 0.5, mirror_axes=(0, 1, 2)),
                              sliding_window_inference(x, other, (16, 16, 16), 0.5), atol=1e-4)


def test_mirroring_tta_is_the_mean_of_the_flipped_passes() -> None:
    net = small_net(1, 3)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        ref = (net(x) + net(x.flip(3)).flip(3)) / 2
    out = sliding_window_inference(x, net, (16, 16, 16), mirror_axes=(1,))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def _peak_rss_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def _vm(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


MIB = 2 ** 20
# The aggregation of 100 classes on 128^3 with 32^3 windows keeps one float16 slab (100 x 32 x 128 x 128)
# and a float32 weight slab (32 x 128 x 128): 102 MiB. The bound we state: 110 MiB, against 800 MiB for
# MONAI's single float32 K x D x H x W buffer.
BUFFER_BOUND = 110 * MIB
FULL_FLOAT32 = 100 * 128 ** 3 * 4


def test_aggregation_memory_for_100_classes_on_128_cubed_is_bounded() -> None:
    weights = torch.linspace(-1, 1, 100)[None, :, None, None, None]

    def trivial(patch: torch.Tensor) -> torch.Tensor:  # a 1x1x1 "convolution" 1 -> 100 channels
        return patch * weights

    x = torch.randn(1, 1, 128, 128, 128).sign() * (1 + torch.rand(1, 1, 128, 128, 128))  # |x| >= 1
    stats: dict[str, int] = {}
    measured = _peak_rss_reset()
    before = _vm("VmRSS") if measured else 0
    labels = sliding_window_inference(x, trivial, (32, 32, 32), overlap=0.0, sw_batch_size=2, output="labels",
                                      stats=stats)
    peak = _vm("VmHWM") - before if measured else 0
    assert labels.shape == (1, 128, 128, 128) and labels.dtype == torch.uint8
    assert torch.equal(labels.long(), (x[:, 0] > 0).long() * 99)  # argmax of w * x: the last or first class
    assert stats["buffer_bytes"] <= BUFFER_BOUND < FULL_FLOAT32 / 7
    if measured and os.environ.get("MEDSEG_SKIP_RSS") is None:
        # resident-set growth of the whole call (slab, window outputs, labels, temporaries; ~170 MiB when
        # written) from the kernel's own counter: well under the one float32 buffer MONAI allocates
        assert peak < 3 * BUFFER_BOUND < FULL_FLOAT32, f"peak RSS growth {peak / MIB:.0f} MiB"


@pytest.mark.parametrize("bad,match", [
    (dict(volume=torch.zeros(1, 1, 8, 8)), "B x C x D x H x W"),
    (dict(overlap=1.0), "overlap must be in"),
    (dict(roi_size=(8, 8)), "roi_size must be 3"),
    (dict(output="probs"), "output must be one of"),
    (dict(mirror_axes=(3,)), "mirror_axes"),
])
def test_bad_arguments_are_named(bad: dict, match: str) -> None:
    args = dict(volume=torch.zeros(1, 1, 8, 8, 8), predictor=small_net(1, 2), roi_size=(8, 8, 8))
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        sliding_window_inference(**args)


def test_engine_uses_the_fixed_window_of_a_fixed_size_model() -> None:
    """``engine.infer.sliding_window_logits``: a model with ``fixed_input_size`` (UNETR) only ever sees
    that size, whatever window the config asks for; the result equals MONAI's with that window."""
    from monai.inferers import sliding_window_inference as monai_sw

    from medseg.config import TrainConfig
    from medseg.engine.infer import sliding_window_logits
    from medseg.engine.runtime import make_runtime

    class Fixed(nn.Module):
        spatial_dims, input_divisor, fixed_input_size = 3, 8, (8, 8, 8)

        def __init__(self) -> None:
            super().__init__()
            self.net = small_net(1, 2)
            self.seen: set[tuple[int, ...]] = set()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.seen.add(tuple(x.shape[2:]))
            return self.net(x)

    model = Fixed()
    rt = make_runtime(TrainConfig(device="cpu", amp="off"), 3)
    x = torch.randn(1, 1, 16, 16, 24)
    out = sliding_window_logits(model, x, [16, 16, 16], 0.25, rt)
    assert model.seen == {(8, 8, 8)}
    with torch.no_grad():
        ref = monai_sw(x, (8, 8, 8), 2, model.net, overlap=0.25, mode="gaussian")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
