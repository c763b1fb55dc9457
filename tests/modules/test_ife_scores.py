"""IFE scores against direct, loop-based references written from the paper's Eq. 1-2 (and the released
code's definitions for the compat entropy modes), per-sample independence, gradients, errors."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from medseg.modules import IFE, curvature_scores, entropy_scores
from medseg.modules.ife import CURVATURE_KERNEL

K = np.array(CURVATURE_KERNEL, dtype=np.float64)


# ------------------------------------------------------------------------------ loop references
def ref_curvature(x: np.ndarray) -> np.ndarray:
    """Eq. 1: sum over valid positions of |sum_{u,v} K[u,v] F[y+u, x+v]| (3-D: per slice in H, W)."""
    b, c = x.shape[:2]
    out = np.zeros((b, c))
    for bi in range(b):
        for ci in range(c):
            planes = x[bi, ci].reshape(-1, *x.shape[-2:])
            total = 0.0
            for f in planes:
                for y in range(f.shape[0] - 2):
                    for xx in range(f.shape[1] - 2):
                        r = 0.0
                        for u in range(3):
                            for v in range(3):
                                r += K[u, v] * f[y + u, xx + v]
                        total += abs(r)
            out[bi, ci] = total
    return out


def window_pairs(f: np.ndarray) -> list[tuple[float, float]]:
    """(centre, sum of the 8 / 26 neighbours) for every window, zero padding, by explicit loops."""
    pad = np.pad(f, 1)
    pairs = []
    for idx in np.ndindex(*f.shape):
        sl = tuple(slice(i, i + 3) for i in idx)
        centre = float(f[idx])
        pairs.append((centre, float(pad[sl].sum()) - centre))
    return pairs


def entropy_bits(counts, norm: float) -> float:
    return -sum((n / norm) * math.log2(n / norm) for n in counts if n > 0)


def ref_keys(f: np.ndarray) -> list[float]:
    n_nb = 3 ** f.ndim - 1
    return [100.0 * i + s / n_nb for i, s in window_pairs(f)]


def ref_entropy(x: np.ndarray, mode: str) -> np.ndarray:
    b, c = x.shape[:2]
    windows = math.prod(x.shape[2:])
    padded = math.prod(s + 2 for s in x.shape[2:])
    keys = [[ref_keys(x[bi, ci]) for ci in range(c)] for bi in range(b)]
    out = np.zeros((b, c))
    for bi in range(b):
        for ci in range(c):
            row = keys[bi][ci]
            if mode in ("hist1d", "batch_hist1d"):  # the released code's torch.histc, one row at a time
                pool = [k for r in keys[bi] for k in r] if mode == "hist1d" else \
                    [k for s in keys for r in s for k in r]
                hist = torch.histc(torch.tensor(row, dtype=torch.float32), bins=256, min=min(pool), max=max(pool))
                out[bi, ci] = entropy_bits(hist.tolist(), windows if mode == "hist1d" else padded)
            elif mode == "unique":
                out[bi, ci] = entropy_bits(Counter(np.float32(row).tolist()).values(), padded)
            elif mode == "joint2d":
                f = x[bi, ci]
                q = np.round((f - f.min()) / (f.max() - f.min()) * 255.0)
                pairs = [(i, math.floor(s / (3 ** f.ndim - 1))) for i, s in window_pairs(q)]
                out[bi, ci] = entropy_bits(Counter(pairs).values(), windows)
    return out


def quantised(shape: tuple[int, ...], levels: int, seed: int, step: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, levels, shape, generator=g) * step).float()


# ----------------------------------------------------------------------------------------- tests
def test_curvature_equals_loop_reference_exactly_on_quantised_input():
    x = quantised((2, 3, 7, 6), 17, 0) - 8
    got = curvature_scores(x, torch.tensor(CURVATURE_KERNEL).reshape(1, 1, 3, 3))
    np.testing.assert_array_equal(got.double().numpy(), ref_curvature(x.double().numpy()))


def test_curvature_float_input_and_3d():
    x = torch.randn(2, 3, 6, 5, generator=torch.Generator().manual_seed(1))
    got = IFE(0.5, "curvature").scores(x)
    np.testing.assert_allclose(got.numpy(), ref_curvature(x.double().numpy()), rtol=1e-5)
    x3 = quantised((1, 2, 3, 5, 4), 9, 2) - 4
    np.testing.assert_array_equal(IFE(0.5, "curvature").scores(x3).double().numpy(), ref_curvature(x3.numpy()))


@pytest.mark.parametrize("mode", ["hist1d", "batch_hist1d", "unique", "joint2d"])
def test_entropy_modes_equal_loop_reference_on_quantised_input(mode):
    if mode == "joint2d":  # every channel spans 0..255 exactly so the quantisation is the identity
        x = quantised((2, 4, 6, 7), 16, 3, step=17)
        x[:, :, 0, 0], x[:, :, 0, 1] = 0.0, 255.0
    else:
        x = quantised((2, 4, 6, 7), 5, 3) + quantised((2, 4, 1, 1), 3, 4) * 7  # channel offsets vary
    got = entropy_scores(x, mode).double().numpy()
    ref = ref_entropy(x.double().numpy(), mode)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    assert np.ptp(ref) > 0.1  # the case discriminates between channels


def test_hist1d_3d_equals_loop_reference():
    x = quantised((2, 2, 3, 4, 5), 6, 5)
    np.testing.assert_allclose(entropy_scores(x, "hist1d").double().numpy(), ref_entropy(x.numpy(), "hist1d"),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("score,mode", [("curvature", "hist1d"), ("entropy", "hist1d"), ("entropy", "unique"),
                                        ("entropy", "joint2d")])
def test_selection_per_sample_does_not_depend_on_batch(score, mode):
    x = torch.randn(4, 16, 9, 9, generator=torch.Generator().manual_seed(7))
    x[2] *= 50.0  # an outlier sample with a very different range
    ife = IFE(0.5, score, mode)
    _, idx, s = ife.select(x)
    for b in range(4):
        _, idx_b, s_b = ife.select(x[b:b + 1])
        torch.testing.assert_close(s_b[0], s[b], rtol=0, atol=0)
        assert torch.equal(idx_b[0], idx[b])


def test_batch_hist1d_depends_on_batch_as_the_released_code():
    x = torch.rand(2, 8, 9, 9, generator=torch.Generator().manual_seed(8))
    x[1] *= 1000.0
    alone = entropy_scores(x[:1], "batch_hist1d")
    together = entropy_scores(x, "batch_hist1d")[:1]
    assert not torch.allclose(alone, together)


def test_topk_order_channel_concat_and_gradients():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 8, 8, 8, generator=g)
    x = x * torch.linspace(0.1, 3.0, 8).reshape(1, 8, 1, 1)[:, torch.randperm(8, generator=g)]
    x.requires_grad_(True)
    ife = IFE(0.75, "curvature", order="raw_first")
    y = ife(x)
    assert y.shape == (3, 8 + 6, 8, 8)
    ref = torch.from_numpy(ref_curvature(x.detach().double().numpy()))
    order = torch.argsort(ref, dim=1, descending=True)[:, :6]
    torch.testing.assert_close(y[:, :8], x)
    for b in range(3):
        torch.testing.assert_close(y[b, 8:], x[b, order[b]])
    y[:, 8:].sum().backward()  # gradient reaches exactly the selected channels
    expected = torch.zeros(3, 8)
    expected.scatter_(1, order, 1.0)
    torch.testing.assert_close(x.grad.mean(dim=(2, 3)), expected)
    y2 = IFE(0.75, "curvature", order="selected_first")(x)
    torch.testing.assert_close(y2[:, 6:], x)


def test_autocast_scores_in_fp32_and_output_dtype_kept():
    x = torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(10))
    ife = IFE(0.5, "entropy")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        xb = x.to(torch.bfloat16)
        s = ife.scores(xb)
        y = ife(xb)
    assert s.dtype == torch.float32 and y.dtype == torch.bfloat16
    torch.testing.assert_close(s, ife.scores(xb.float()), rtol=0, atol=0)


def test_export_has_no_python_loop_and_matches_eager():
    x = torch.randn(2, 8, 10, 10, generator=torch.Generator().manual_seed(11))
    for score in ("curvature", "entropy"):
        ife = IFE(0.5, score)
        ep = torch.export.export(ife, (x,))
        torch.testing.assert_close(ep.module()(x), ife(x))


def test_kernel_is_a_buffer_not_a_parameter():
    ife = IFE(0.5)
    assert not list(ife.parameters())
    assert "kernel" in dict(ife.named_buffers())


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, True, "0.5"])
def test_bad_ratio(ratio):
    with pytest.raises(ValueError, match=r"IFE 'p1'.*\(0, 1\]"):
        IFE(ratio, name="p1")


def test_ratio_selecting_no_channel_names_layer_and_width():
    with pytest.raises(ValueError, match=r"IFE 'unet.skip1'.*0 of the 4 channels"):
        IFE(0.2, channels=4, name="unet.skip1")
    with pytest.raises(ValueError, match=r"IFE 'late'.*0 of the 3 channels"):
        IFE(0.2, name="late")(torch.randn(1, 3, 8, 8))


def test_small_map_and_non_finite_features():
    with pytest.raises(ValueError, match=r"IFE 'deep'.*at least 3x3.*\(2, 5\)"):
        IFE(0.5, name="deep")(torch.randn(1, 4, 2, 5))
    IFE(0.5, "entropy")(torch.randn(1, 4, 2, 2))  # entropy has no minimum size
    bad = torch.randn(1, 4, 6, 6)
    bad[0, 1, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"IFE 'x3'.*NaN or Inf"):
        IFE(0.5, "entropy", name="x3")(bad)
    bad[0, 1, 2, 2] = -float("inf")
    with pytest.raises(ValueError, match=r"IFE 'x3'.*NaN or Inf"):
        IFE(0.5, name="x3")(bad)


def test_unknown_modes():
    with pytest.raises(ValueError, match="valid: curvature, entropy"):
        IFE(0.5, "texture")
    with pytest.raises(ValueError, match="hist1d"):
        IFE(0.5, "entropy", entropy_mode="hist2d")


def test_channels_last_input_gives_the_same_scores():
    x = torch.randn(2, 8, 9, 9, generator=torch.Generator().manual_seed(12))
    cl = x.contiguous(memory_format=torch.channels_last)
    for score, mode in (("curvature", "hist1d"), ("entropy", "hist1d"), ("entropy", "unique")):
        ife = IFE(0.5, score, mode)
        torch.testing.assert_close(ife.scores(cl), ife.scores(x), rtol=1e-6, atol=1e-5)  # sum order only
        torch.testing.assert_close(ife(cl), ife(x))
