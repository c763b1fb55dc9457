"""Instructive Feature Enhancement (IFE), Liu et al., "Instructive Feature Enhancement for Dichotomous
Medical Image Segmentation", MICCAI 2023 (code: github.com/yezi-66/IFE).

IFE scores every channel of a feature map by how much texture it carries, keeps the per-sample top
``k = floor(r * C)`` channels in descending score order and concatenates them to the raw features, so the
next layer sees the most "instructive" channels twice::

    ife = IFE(0.75, score="curvature")          # one line in any network
    y = ife(x)                                   # B x (C + floor(0.75 C)) x H x W

Scores (``docs/ife.md``, section Scores), per sample ``b`` and channel ``c`` of ``F = x[b, c]``:

* **curvature** (Eq. 1): ``s = sum_{valid} |K * F|`` with the fixed, zero-sum 3x3 kernel
  ``K = [[-1/16, 5/16, -1/16], [5/16, -1, 5/16], [-1/16, 5/16, -1/16]]`` applied depthwise without padding
  (output ``(H-2) x (W-2)``). 3-D maps are scored slice by slice in the last two axes (in-plane curvature,
  summed over the slices).
* **entropy** (Eq. 2): for every 3x3 (3x3x3 in 3-D) window with zero padding, ``i`` = the centre value and
  ``j`` = the mean of the 8 (26) neighbours; ``E = -sum P log2 P``. ``j`` is computed without unfolding as
  ``j = (sumpool3(F) - F) / (n - 1)``. Modes:

  - ``hist1d`` (default): the released UNet key ``100 i + j``, a 256-bin histogram per (sample, channel)
    whose range is the min/max of *that sample's* keys (so a score never depends on the other images of
    the batch); ``P = count / (H W)``.
  - ``batch_hist1d``: as the released UNet code: the range is the min/max over the whole batch and
    ``P = count / ((H+2)(W+2))``.
  - ``unique``: as the released SINet/DeepLab code: exact distinct values of ``100 i + j`` per channel,
    ``P = count / ((H+2)(W+2))``.
  - ``joint2d``: the paper's text: per-channel min-max quantisation to integers ``0..255``
    (``q = round(255 (F - min) / (max - min))``), ``i = q``, ``j = floor(sum of the neighbours of q / (n-1))``
    (zero padding), a 256 x 256 joint histogram of ``(i, j)``, ``P = count / (H W)``.

  A constant normaliser does not change the ranking inside one layer.

Scores are computed in fp32 without gradient (autocast off); the gathered channels carry gradients.

Wiring (``docs/ife.md``, section Networks): every medseg network gets its IFE modules and its widened
channel counts from one :class:`IFESpec` (built from the factory's ``ife=`` / ``ife_ratio=`` /
``ife_levels=`` options by :meth:`IFESpec.from_kwargs`) and one call of :func:`build_ife`. **Levels count from
0**, in the network's list of IFE points, shallowest (highest resolution) first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.errors import UserError

SCORES: Final = ("curvature", "entropy")
ENTROPY_MODES: Final = ("hist1d", "batch_hist1d", "unique", "joint2d")
ORDERS: Final = ("raw_first", "selected_first")
CURVATURE_KERNEL: Final = ((-1 / 16, 5 / 16, -1 / 16), (5 / 16, -1.0, 5 / 16), (-1 / 16, 5 / 16, -1 / 16))
KEY_SCALE: Final = 100.0  # the released code's scalar key 100 * i + j


def selected_channels(ratio: float, channels: int) -> int:
    """``k = floor(r * C)``, the number of channels IFE adds (released code: ``int(ratio * C)``)."""
    return int(ratio * channels)


def check_ratio(ratio: float, name: str = "ife", channels: int | None = None) -> float:
    """Validate an IFE ratio in (0, 1] and, when the width is known, that it selects at least one channel."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"IFE '{name}': ratio must be a number in (0, 1], got {ratio!r}")
    if channels is not None and selected_channels(float(ratio), channels) < 1:
        need = 1.0 / channels
        raise ValueError(f"IFE '{name}': ratio {ratio} selects floor({ratio}*{channels}) = 0 of the {channels} "
                         f"channels of this layer; use a ratio >= {need:.4g} (or no IFE at this point)")
    return float(ratio)


# ------------------------------------------------------------------------------------------ scores
def curvature_scores(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Eq. 1: ``s[b, c] = sum |K * x[b, c]|`` over the valid (unpadded) region; fp32, shape ``B x C``.

    ``kernel`` is the 3x3 kernel as a ``1 x 1 x 3 x 3`` tensor. A 3-D map ``B x C x D x H x W`` is scored
    slice by slice in (H, W) and summed over D.
    """
    b, c = x.shape[0], x.shape[1]
    h, w = x.shape[-2], x.shape[-1]
    planes = x.reshape(b, -1, h, w).float()  # B x (C*D) x H x W (a view for contiguous input)
    n = planes.shape[1]
    resp = F.conv2d(planes, kernel.to(planes.dtype).expand(n, 1, 3, 3), groups=n)
    return resp.abs_().reshape(b, c, -1).sum(-1)


def window_sums(x: torch.Tensor) -> torch.Tensor:
    """Exact sums over every 3x3 (3x3x3) window with zero padding: a sum-pool (``divisor_override=1``)."""
    pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
    if min(x.shape[2:]) < 3:  # the pooling kernels refuse maps smaller than the window even when padded
        return pool(F.pad(x, [1] * (2 * (x.dim() - 2))), 3, 1, 0, divisor_override=1)
    return pool(x, 3, 1, 1, count_include_pad=True, divisor_override=1)


def _window_keys(x: torch.Tensor) -> torch.Tensor:
    """``100 i + j`` per window (zero padding): ``i = x``, ``j`` = mean of the 8 (26) neighbours, fp32."""
    n_nb = 3 ** (x.dim() - 2) - 1
    return window_sums(x).sub_(x).div_(n_nb).add_(x, alpha=KEY_SCALE)


def _entropy_bits(counts: torch.Tensor, norm: float) -> torch.Tensor:
    """``-sum P log2 P`` per row with ``P = counts / norm`` (empty bins contribute 0)."""
    p = counts / norm
    return 0.0 - (p * torch.log2(p.clamp_min(1e-40))).sum(-1)  # 0 - x, so an empty sum is +0, not -0


def _histogram_entropy(keys: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int,
                       norm: float) -> torch.Tensor:
    """Entropy of a ``bins``-bin histogram of each row of ``keys`` (``R x N``) over ``[lo, hi]`` (``R x 1``).

    Bin index ``floor((v - lo) * bins / (hi - lo))``, the last edge included in the last bin, as
    ``torch.histc``; a constant row (``hi == lo``) falls into one bin. ``keys`` (fp32, contiguous) is
    overwritten in place with the flat int32 bin indices ``row * bins + bin`` (same element size, so the
    conversion needs no second buffer) and counted by one ``bincount``: no memory beyond ``keys``.
    Under ``torch.compile``/``torch.export`` a static-shape ``index_put_`` is used instead.
    """
    r = keys.shape[0]
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    keys = keys.sub_(lo).mul_(bins).div_(span).floor_().clamp_(0, bins - 1)
    offsets = torch.arange(r, dtype=torch.int32, device=keys.device).mul_(bins).unsqueeze(1)
    if torch.compiler.is_compiling():
        flat = (keys.to(torch.int64) + offsets).reshape(-1)  # int64: ONNX ScatterND takes int64 indices only
        counts = torch.zeros(r * bins, dtype=torch.float32, device=keys.device)
        counts = counts.index_put_((flat,), torch.ones((), dtype=torch.float32, device=keys.device), accumulate=True)
    else:
        idx = keys.view(torch.int32)
        idx.copy_(keys)  # element-wise float -> int32 into the same storage (full overlap is allowed)
        counts = torch.bincount(idx.add_(offsets).reshape(-1), minlength=r * bins).float()
    return _entropy_bits(counts.reshape(r, bins), norm)


def _distinct_entropy(keys: torch.Tensor, norm: float) -> torch.Tensor:
    """Entropy of the exact distinct values of each row of ``keys`` (sort + run lengths, no Python loop)."""
    s = keys.sort(dim=1).values
    start = torch.ones_like(s, dtype=torch.bool)
    start[:, 1:] = s[:, 1:] != s[:, :-1]
    run = start.cumsum(1).sub_(1)
    ones = torch.ones((1, 1), dtype=torch.float32, device=keys.device).expand(run.shape)
    counts = torch.zeros(s.shape, dtype=torch.float32, device=keys.device).scatter_add_(1, run, ones)
    return _entropy_bits(counts, norm)


def _quantise_255(x: torch.Tensor) -> torch.Tensor:
    """Per-(sample, channel) min-max scaling to integers ``0..255`` (fp32 holding integers)."""
    flat = x.flatten(2)
    lo = flat.amin(-1).reshape(x.shape[:2] + (1,) * (x.dim() - 2))
    hi = flat.amax(-1).reshape(x.shape[:2] + (1,) * (x.dim() - 2))
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return ((x - lo) / span * 255.0).round_()


def entropy_scores(x: torch.Tensor, mode: str = "hist1d", bins: int = 256) -> torch.Tensor:
    """Eq. 2 window entropy per (sample, channel), fp32, shape ``B x C``; see the module docstring."""
    x = x.float()
    b, c = x.shape[0], x.shape[1]
    nd = x.dim() - 2
    windows = math.prod(x.shape[2:])
    padded = math.prod(s + 2 for s in x.shape[2:])  # the released normaliser (H+2)(W+2)
    if mode == "joint2d":
        q = _quantise_255(x)
        n_nb = 3 ** nd - 1
        j = window_sums(q).sub_(q).div_(n_nb).floor_()
        keys = q.mul_(256.0).add_(j).reshape(b * c, -1)
        return _distinct_entropy(keys, float(windows)).reshape(b, c)
    keys = _window_keys(x).reshape(b, c, -1)
    if mode == "unique":
        return _distinct_entropy(keys.reshape(b * c, -1), float(padded)).reshape(b, c)
    if mode == "hist1d":
        lo = keys.amin(dim=(1, 2), keepdim=True).expand(b, c, 1).reshape(b * c, 1)
        hi = keys.amax(dim=(1, 2), keepdim=True).expand(b, c, 1).reshape(b * c, 1)
        norm = float(windows)
    elif mode == "batch_hist1d":
        lo = keys.amin().reshape(1, 1).expand(b * c, 1)
        hi = keys.amax().reshape(1, 1).expand(b * c, 1)
        norm = float(padded)
    else:
        raise ValueError(f"unknown entropy_mode '{mode}' (valid: {', '.join(ENTROPY_MODES)})")
    return _histogram_entropy(keys.reshape(b * c, -1), lo, hi, bins, norm).reshape(b, c)


def gather_channels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``out[b, n] = x[b, index[b, n]]`` for ``index`` of shape ``B x k`` (differentiable in ``x``)."""
    b, k = index.shape
    view = index.reshape((b, k) + (1,) * (x.dim() - 2)).expand((b, k) + tuple(x.shape[2:]))
    return torch.gather(x, 1, view)


# ------------------------------------------------------------------------------------------ module
class IFE(nn.Module):
    """Instructive Feature Enhancement: ``cat([x, top_k(x)])`` (or ``[top_k(x), x]``), ``k = floor(r C)``.

    Args:
        ratio: fraction ``r`` in (0, 1] of the channels to select.
        score: ``"curvature"`` (Eq. 1) or ``"entropy"`` (Eq. 2).
        entropy_mode: ``hist1d`` (default) | ``batch_hist1d`` | ``unique`` | ``joint2d`` (module docstring).
        channels: width of the input, if known: checked now, so a ratio that selects no channel fails at
            construction with the layer named.
        name: the insertion point, named in every error (e.g. ``"unet.skip1"``).
        order: ``"raw_first"`` (UNet: ``[x, selected]``) or ``"selected_first"`` (DeepLabV3+, SINetV2).
        bins: histogram bins for the ``hist1d`` modes (256 in the paper's code).
        check_finite: raise on NaN/Inf features (one reduction and a host sync per call; skipped while
            ``torch.compile``/``torch.export`` trace the module, which then has no data-dependent branch).

    Shapes: ``B x C x H x W`` or ``B x C x D x H x W`` -> same with ``C + floor(r C)`` channels.
    """

    def __init__(self, ratio: float, score: str = "curvature", entropy_mode: str = "hist1d",
                 channels: int | None = None, name: str = "ife", order: str = "raw_first", bins: int = 256,
                 check_finite: bool = True) -> None:
        super().__init__()
        self.name = name
        self.ratio = check_ratio(ratio, name, channels)
        if score not in SCORES:
            raise ValueError(f"IFE '{name}': unknown score '{score}' (valid: {', '.join(SCORES)})")
        if entropy_mode not in ENTROPY_MODES:
            raise ValueError(f"IFE '{name}': unknown entropy_mode '{entropy_mode}' "
                             f"(valid: {', '.join(ENTROPY_MODES)})")
        if order not in ORDERS:
            raise ValueError(f"IFE '{name}': unknown order '{order}' (valid: {', '.join(ORDERS)})")
        if bins < 2:
            raise ValueError(f"IFE '{name}': bins must be >= 2, got {bins}")
        self.score = score
        self.entropy_mode = entropy_mode
        self.channels = channels
        self.order = order
        self.bins = bins
        self.check_finite = check_finite
        self.register_buffer("kernel", torch.tensor(CURVATURE_KERNEL).reshape(1, 1, 3, 3), persistent=False)

    def extra_repr(self) -> str:
        mode = f", entropy_mode={self.entropy_mode}" if self.score == "entropy" else ""
        return f"name={self.name}, ratio={self.ratio}, score={self.score}{mode}, order={self.order}"

    def out_channels(self, channels: int) -> int:
        """Output width for an input of ``channels``: ``C + floor(r C)``."""
        return channels + selected_channels(self.ratio, channels)

    def num_selected(self, channels: int) -> int:
        return selected_channels(self.ratio, channels)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() not in (4, 5):
            raise ValueError(f"IFE '{self.name}': expected a B x C x H x W or B x C x D x H x W feature map, "
                             f"got shape {tuple(x.shape)}")
        c = x.shape[1]
        if self.channels is not None and c != self.channels:
            raise ValueError(f"IFE '{self.name}': built for {self.channels} channels, got {c} "
                             f"(shape {tuple(x.shape)})")
        if selected_channels(self.ratio, c) < 1:
            check_ratio(self.ratio, self.name, c)
        if self.score == "curvature" and min(x.shape[-2], x.shape[-1]) < 3:
            raise ValueError(f"IFE '{self.name}': curvature needs a feature map of at least 3x3, got "
                             f"{tuple(x.shape[2:])}; insert IFE at a shallower level or use a larger input")
        if self.check_finite and not torch.compiler.is_compiling() and \
                not bool(torch.isfinite(x.detach().abs().amax())):
            raise ValueError(f"IFE '{self.name}': the feature map (shape {tuple(x.shape)}) contains NaN or "
                             f"Inf; the network diverged before this point (lower the learning rate, check "
                             f"the input normalisation or enable gradient clipping)")

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Channel scores ``B x C`` in fp32 (no gradient, autocast off)."""
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            feat = x.detach().float()
            if self.score == "curvature":
                return curvature_scores(feat, self.kernel)
            return entropy_scores(feat, self.entropy_mode, self.bins)

    def select(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(selected, index, scores)``: the top-k channels in descending score order per sample."""
        self._check(x)
        s = self.scores(x)
        index = torch.topk(s, selected_channels(self.ratio, x.shape[1]), dim=1, largest=True, sorted=True).indices
        return gather_channels(x, index), index, s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        selected = self.select(x)[0]
        pair = (x, selected) if self.order == "raw_first" else (selected, x)
        return torch.cat(pair, dim=1)


def make_ife(ratio: float | None, score: str | None, entropy_mode: str, channels: int, name: str,
             order: str = "raw_first") -> IFE | None:
    """An :class:`IFE` for one insertion point, or ``None`` when ``score`` is None or ``ratio`` is 0/None."""
    if score is None or ratio is None or ratio == 0:
        return None
    return IFE(ratio, score, entropy_mode, channels=channels, name=name, order=order)


# ------------------------------------------------------------------------------------------ wiring
NO_IFE: Final = (None, "none", "off")


class IFESpecError(UserError, ValueError):
    """IFE options of a network that cannot be honoured; the message names the option (``ife_ratio``...)."""


@dataclass(frozen=True)
class IFESpec:
    """Which IFE a network applies at which of its IFE points: the one wiring of every medseg network.

    **Indexing convention**: a *level* is the 0-based index of an IFE point in the network's list of points,
    shallowest (highest resolution) first. ``unet``/``unet3d``: skip ``l`` is the encoder output at stride
    ``2**l`` (0 = full resolution; the paper's c2, c3 are levels 1, 2); ``nnunet``: skip ``l`` = encoder
    stage ``l + 1`` (its older ``ife_stages`` counts from 1 and is still accepted); ``sinet_v2``: 0, 1, 2 =
    the TEM outputs at stride 8, 16, 32; ``deeplabv3plus``: 0 = the 48-ch low-level feature, 1 = the ASPP
    output.

    Attributes:
        score: ``"curvature"`` (Eq. 1) or ``"entropy"`` (Eq. 2).
        levels: the levels that get IFE (0-based, distinct).
        ratios: one ratio per level in [0, 1]; 0 = no IFE at that level (the consuming layer keeps its width).
        entropy_mode: see the module docstring (``hist1d`` default).
        model: the network's name, the first word of every error.
        levels_key: the factory option the levels came from (named in errors); ``None`` when the network has
            no such option (one ratio per IFE point, in point order).
        levels_base: the first index of ``levels_key`` as the user writes it (1 for ``ife_stages``).
    """

    score: str
    levels: tuple[int, ...]
    ratios: tuple[float, ...]
    entropy_mode: str = "hist1d"
    model: str = "model"
    levels_key: str | None = "ife_levels"
    levels_base: int = 0

    def __post_init__(self) -> None:
        m = self.model
        if self.score not in SCORES:
            raise IFESpecError(f"{m}: ife={self.score!r} is not an IFE score (valid: {', '.join(SCORES)}, "
                               f"or null for no IFE)")
        if self.entropy_mode not in ENTROPY_MODES:
            raise IFESpecError(f"{m}: ife_entropy_mode={self.entropy_mode!r} is unknown (valid: "
                               f"{', '.join(ENTROPY_MODES)})")
        if self.levels_key is not None and len(self.ratios) != len(self.levels):
            raise IFESpecError(f"{m}: ife_ratio {self.ratios} needs one ratio per entry of {self.levels_key} "
                               f"{self.user_levels}")
        for i, r in enumerate(self.ratios):
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= float(r) <= 1.0:
                raise IFESpecError(f"{m}: ife_ratio[{i}] = {r!r} must be a number in [0, 1] "
                                   f"(0 = no IFE at that level)")
        if any(isinstance(v, bool) or not isinstance(v, int) for v in self.levels):
            raise IFESpecError(f"{m}: {self.levels_key} {self.user_levels} must be integers")
        if len(set(self.levels)) != len(self.levels):
            raise IFESpecError(f"{m}: {self.levels_key} {self.user_levels} names a level twice")

    @property
    def user_levels(self) -> tuple[int, ...]:
        """The levels as the user wrote them (``levels_base`` added back)."""
        return tuple(v + self.levels_base for v in self.levels)

    @classmethod
    def from_kwargs(cls, model: str, ife: str | None, ife_ratio: Sequence[float],
                    ife_levels: Sequence[int] | None = None, ife_entropy_mode: str = "hist1d", *,
                    levels_key: str | None = "ife_levels", levels_base: int = 0) -> IFESpec | None:
        """The spec of a factory's ``ife=``, ``ife_ratio=``, ``ife_levels=`` options; ``None`` for no IFE
        (``ife`` null / ``"none"`` / ``"off"``). ``ife_levels=None``: one ratio per IFE point, in point order.
        ``levels_base=1`` reads 1-based levels (``nnunet``'s ``ife_stages``)."""
        if ife in NO_IFE:
            return None
        if isinstance(ife_ratio, (int, float)):
            raise IFESpecError(f"{model}: ife_ratio={ife_ratio!r} must be a list with one ratio per IFE level")
        ratios = tuple(float(r) if isinstance(r, (int, float)) and not isinstance(r, bool) else r
                       for r in ife_ratio)
        if ife_levels is None:
            return cls(ife, tuple(range(len(ratios))), ratios, ife_entropy_mode, model, None, 0)
        levels = tuple(int(v) - levels_base if isinstance(v, int) and not isinstance(v, bool) else v
                       for v in ife_levels)
        return cls(ife, levels, ratios, ife_entropy_mode, model, levels_key, levels_base)

    def without(self, level: int) -> IFESpec:
        """The same spec with ratio 0 (no IFE) at ``level`` (e.g. DeepLabV3+'s ``ife_aspp=False``)."""
        return replace(self, ratios=tuple(0.0 if lv == level else r for lv, r in zip(self.levels, self.ratios)))


class IFEPoints(nn.ModuleDict):
    """A network's IFE modules keyed by level (``"0"``, ``"1"``...), only the levels with a ratio > 0.

    ``points.enhance(level, x)`` applies the module of ``level`` or returns ``x`` unchanged; ``points[key]``
    is the :class:`IFE` of one level. Holds no tensors: a network's state-dict keys do not depend on it.
    """

    def enhance(self, level: int, x: torch.Tensor) -> torch.Tensor:
        key = str(level)
        return self[key](x) if key in self else x


def build_ife(spec: IFESpec | None, widths: Sequence[int], names: Sequence[str], order: str = "raw_first",
              point: str = "IFE point") -> tuple[IFEPoints, list[int]]:
    """The IFE modules of a network and the widths of its IFE points after enhancement.

    Args:
        spec: the network's :class:`IFESpec` (``None``: no IFE, widths unchanged).
        widths: channels ``C_l`` of every IFE point of the network, level 0 first.
        names: the name of every point (``"unet.skip1"``), used in every IFE error.
        order: ``"raw_first"`` (``[x, selected]``) or ``"selected_first"``.
        point: what a level is in this network (``"skip connection"``), for the out-of-range error.

    Returns:
        ``(points, out_widths)``: an :class:`IFEPoints` with one :class:`IFE` per level whose ratio is > 0
        and ``out_widths[l] = C_l + floor(r_l C_l)`` there, ``C_l`` elsewhere (ratio 0 or level not listed).
    """
    out = [int(c) for c in widths]
    if len(names) != len(out):
        raise ValueError(f"build_ife: {len(names)} names for {len(out)} IFE points")
    if spec is None:
        return IFEPoints(), out
    n, base, key = len(out), spec.levels_base, spec.levels_key
    if key is None and len(spec.ratios) != n:
        raise IFESpecError(f"{spec.model}: ife_ratio {spec.ratios} needs one ratio per IFE point "
                           f"({', '.join(names)}), got {len(spec.ratios)}")
    modules: dict[str, IFE] = {}
    for level, ratio in sorted(zip(spec.levels, spec.ratios)):
        if not 0 <= level < n:
            raise IFESpecError(f"{spec.model}: {key} entry {level + base} has no {point}; valid entries are "
                               f"{base}..{n - 1 + base} ({base} = {names[0]})")
        ife = make_ife(ratio, spec.score, spec.entropy_mode, out[level], names[level], order)
        if ife is not None:
            modules[str(level)] = ife
            out[level] = ife.out_channels(out[level])
    return IFEPoints(modules), out
