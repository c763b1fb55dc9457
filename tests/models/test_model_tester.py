"""The shared model tester (issue 12 item 7): one parameterised test per check over every registered model.

The idea is segmentation_models_pytorch's ``tests/models/base.py`` (``BaseModelTester``); the code is ours.
The model list is read from the registry at import time, so a newly registered model is tested at once,
with the :data:`DEFAULT` tiny configuration unless :data:`TINY` has an entry for it.

Checks (the names used in :data:`LIMITATIONS`), each against the contract of ``ARCHITECTURE.md`` (a model
returns logits ``B x K x *spatial`` or a dict whose ``"out"`` holds them; it sets ``spatial_dims`` and
``input_divisor``):

* ``forward``: main output ``2 x out_channels x *size`` and finite (eval mode);
* ``backward``: train-mode forward, backward of the sum of the means of every floating output; every
  gradient finite and the total gradient non-zero;
* ``all_params_used``: every trainable parameter receives a gradient (DDP without
  ``find_unused_parameters`` fails otherwise);
* ``export``: ``torch.export.export(strict=False)`` succeeds and the exported program's outputs equal the
  eager ones within 1e-5;
* ``channels_last``: the model and input in ``channels_last`` (2-D) / ``channels_last_3d`` give the eager
  output within 1e-4 (relative to its largest value);
* ``bf16``: CPU bf16 autocast (the trainer's CPU default) gives finite outputs within 5 % (relative L2)
  of float32 (eval mode);
* ``odd_sizes``: a size that is not a multiple of ``input_divisor`` (``+1, +3, +5`` per axis) meets the
  model's declared :attr:`Tiny.odd` contract: ``"raise"`` (a ``ValueError`` naming the size it got and
  how to fix it, while the sizes rounded up to ``input_divisor`` are accepted), ``"pad"`` (zero padding at
  the far end and cropping back: equal to the cropped output of the padded input) or ``"interpolate"``
  (logits resized to the input size);
* ``in_channels``: the model built with ``in_channels=1`` and with ``in_channels=3`` both run.

A model that cannot do one of these says so in :data:`LIMITATIONS` (model -> check -> reason); that check
is then ``xfail(strict=True)``, so the declaration goes red as soon as the model is fixed.
"""
from __future__ import annotations

import copy
import inspect
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._pytree import tree_leaves

from medseg.models import MODELS, create_model


def _enable_branches(model: nn.Module) -> None:
    """MLN: switch on the pixel branch and the fusion (epoch >= 12), so every parameter is exercised."""
    model.enable_branches(True)


@dataclass(frozen=True)
class Tiny:
    """The smallest configuration of a model for the tester.

    Attributes:
        kwargs: factory options besides ``in_channels`` / ``out_channels`` (``pretrained=False`` is added
            when the factory has that option).
        size: input size; ``None``: the smallest multiple of ``input_divisor`` that is >= 32 (2-D) / 16 (3-D).
        odd: what the model does with a size that is not a multiple of ``input_divisor``: ``"raise"``,
            ``"pad"`` or ``"interpolate"`` (see the module docstring).
        out_channels: logit channels to build with (2 unless the model allows only one).
        prepare: called on every built model (e.g. to switch on optional branches).
    """

    kwargs: dict[str, Any] = field(default_factory=dict)
    size: tuple[int, ...] | None = None
    odd: str = "raise"
    out_channels: int = 2
    prepare: Callable[[nn.Module], None] | None = None


DEFAULT = Tiny()
# A model without a TINY entry is built with its factory defaults; this guards the suite's time against a
# heavy default (deeplabv3plus's ResNet-101 alone has 59 M parameters): give such a model a TINY entry.
DEFAULT_MAX_PARAMS = 50_000_000

TINY: dict[str, Tiny] = {
    # ResNet-18 is built in (no width option): 15 M parameters, so the smallest input that still has a
    # 2 x 2 deepest feature map (16 x 16 at output stride 8).
    "c2f_coarse": Tiny(size=(16, 16), odd="interpolate"),
    "c2f_fine": Tiny(size=(16, 16), odd="interpolate"),
    "chnet": Tiny({"encoder": "resnet10t"}, size=(16, 16), odd="pad"),
    "deeplabv3_3d": Tiny({"base": 4, "aspp_channels": 8}),
    "deeplabv3plus": Tiny({"encoder": "resnet10t"}, size=(16, 16), odd="interpolate"),
    "mln": Tiny({"num_points": 16}, size=(16, 16), odd="interpolate", prepare=_enable_branches),
    "nnunet": Tiny({"patch_size": (16, 16), "base": 4}),
    "sinet_v2": Tiny({"encoder": "resnet10t", "channel": 8}, out_channels=1),
    "unet": Tiny({"base": 4, "depth": 2}),
    "unet3d": Tiny({"base": 4, "depth": 2}),
    "unetr": Tiny({"img_size": 16, "feature_size": 4, "hidden_size": 16, "mlp_dim": 32, "num_heads": 2},
                  size=(16, 16, 16)),
    # vnet: no size option (MONAI's 16-channel V-Net); it uses DEFAULT (16^3 = its input_divisor).
}

CHECKS = ("forward", "backward", "all_params_used", "export", "channels_last", "bf16", "odd_sizes", "in_channels")

# model -> check -> why it cannot pass it; the check is then xfail(strict=True).
LIMITATIONS: dict[str, dict[str, str]] = {
    "unetr": {
        "all_params_used": "MONAI's ViT blocks hold norm_cross_attn LayerNorms that forward never calls "
                           "(no cross-attention): 2 parameters per block get no gradient",
    },
}


def registered_models() -> list[str]:
    """Every model medseg registers, except aliases (an alias builds the same factory as its name).

    Factories defined outside the ``medseg`` package (tiny networks that other test modules register, e.g.
    ``tests/engine/c2f_helpers.py``) are left out: whether they are collected before this module depends on
    the test order, and they are not part of what medseg ships."""
    return [n for n, doc in MODELS.describe().items()
            if not doc.startswith("alias of ") and getattr(MODELS.get(n), "__module__", "").startswith("medseg.")]


NAMES = registered_models()


def params_for(check: str) -> list[Any]:
    """One ``pytest.param`` per model, ``xfail(strict=True)`` where LIMITATIONS declares ``check``."""
    out = []
    for name in NAMES:
        reason = LIMITATIONS.get(name, {}).get(check)
        marks = [pytest.mark.xfail(strict=True, reason=reason, raises=(AssertionError, RuntimeError))] if reason else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def build(name: str, in_channels: int = 3) -> nn.Module:
    """The tiny model ``name`` in eval mode (seeded, no pretrained weights)."""
    tiny = TINY.get(name, DEFAULT)
    kwargs = dict(tiny.kwargs, in_channels=in_channels, out_channels=tiny.out_channels)
    if "pretrained" in inspect.signature(MODELS.get(name)).parameters:
        kwargs["pretrained"] = False
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    if tiny.prepare is not None:
        tiny.prepare(model)
    return model.eval()


def main(out: Any) -> torch.Tensor:
    """The main logits of a model output (the tensor, or ``out["out"]``)."""
    return out["out"] if isinstance(out, dict) else out


def image(channels: int, size: tuple[int, ...], batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, channels, *size, generator=torch.Generator().manual_seed(1))


def float_leaves(out: Any) -> list[torch.Tensor]:
    return [t for t in tree_leaves(out) if torch.is_tensor(t) and t.is_floating_point()]


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.float() - ref).norm() / ref.norm().clamp_min(1e-12))


@dataclass
class Case:
    """A built model with its tiny configuration, input size and (lazily) its train-mode gradients."""

    name: str
    tiny: Tiny
    model: nn.Module
    size: tuple[int, ...]
    _grads: dict[str, torch.Tensor | None] | None = None

    @property
    def dims(self) -> int:
        return int(self.model.spatial_dims)

    @property
    def divisor(self) -> int:
        return int(self.model.input_divisor)

    def eager(self, x: torch.Tensor) -> Any:
        self.model.eval()
        with torch.no_grad():
            return self.model(x)

    def grads(self) -> dict[str, torch.Tensor | None]:
        """Parameter name -> gradient of one train-mode forward/backward on a batch of 2 (computed once)."""
        if self._grads is None:
            model = self.model.train()
            model.zero_grad(set_to_none=True)
            out = model(image(3, self.size))
            assert main(out).shape == (2, self.tiny.out_channels, *self.size), "train-mode output shape"
            sum(t.float().mean() for t in float_leaves(out)).backward()
            self._grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
            model.zero_grad(set_to_none=True)
            model.eval()
        return self._grads


def default_size(model: nn.Module) -> tuple[int, ...]:
    dims, d = int(model.spatial_dims), int(model.input_divisor)
    least = 32 if dims == 2 else 16
    return (-(-least // d) * d,) * dims


@pytest.fixture(scope="module")
def case(request: pytest.FixtureRequest) -> Case:
    """The tiny model of ``request.param``, built once per module (pytest groups the tests by model)."""
    name = request.param
    tiny = TINY.get(name, DEFAULT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build(name)
    return Case(name, tiny, model, tiny.size or default_size(model))


def test_every_registered_model_is_in_the_tester() -> None:
    """The parameter list is the registry's; table entries name registered models and known checks; a model
    that uses DEFAULT has the factory options the tester passes and a small default build."""
    assert NAMES == registered_models() and NAMES, "NAMES is read from the registry at import time"
    aliases = [n for n, doc in MODELS.describe().items() if doc.startswith("alias of ")]
    for alias in aliases:
        assert any(MODELS.get(alias) is MODELS.get(n) for n in NAMES), f"alias {alias} of no tested model"
    assert set(TINY) <= set(NAMES), f"TINY has unregistered models: {sorted(set(TINY) - set(NAMES))}"
    for name, checks in LIMITATIONS.items():
        assert name in NAMES, f"LIMITATIONS names an unregistered model {name}"
        assert set(checks) <= set(CHECKS), f"{name}: unknown checks {sorted(set(checks) - set(CHECKS))}"
        assert all(isinstance(r, str) and r.strip() for r in checks.values()), f"{name}: give a reason"
    for name, tiny in TINY.items():
        assert tiny.odd in ("raise", "pad", "interpolate"), f"{name}: odd={tiny.odd!r}"
    for name in sorted(set(NAMES) - set(TINY)):
        params = inspect.signature(MODELS.get(name)).parameters
        assert {"in_channels", "out_channels"} <= set(params), f"{name}: factory needs in/out_channels"
        with torch.device("meta"):
            n_params = sum(p.numel() for p in build(name).parameters())
        assert n_params <= DEFAULT_MAX_PARAMS, (
            f"{name} uses the tester's DEFAULT (factory defaults: {n_params / 1e6:.0f} M parameters): "
            "add a TINY entry with its smallest widths")


@pytest.mark.parametrize("case", params_for("forward"), indirect=True)
def test_forward(case: Case) -> None:
    out = main(case.eager(image(3, case.size)))
    assert out.shape == (2, case.tiny.out_channels, *case.size)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert case.dims == len(case.size) and case.size[0] % case.divisor == 0


@pytest.mark.parametrize("case", params_for("backward"), indirect=True)
def test_backward(case: Case) -> None:
    grads = [g for g in case.grads().values() if g is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads), "non-finite gradient"
    assert sum(float(g.abs().sum()) for g in grads) > 0, "all gradients are zero"


@pytest.mark.parametrize("case", params_for("all_params_used"), indirect=True)
def test_all_params_used(case: Case) -> None:
    unused = [n for n, g in case.grads().items() if g is None]
    assert not unused, f"{len(unused)} trainable parameters get no gradient: {unused[:6]}"


@pytest.mark.parametrize("case", params_for("export"), indirect=True)
def test_export(case: Case) -> None:
    x = image(3, case.size)
    ref = case.eager(x)
    program = torch.export.export(case.model, (x,), strict=False)
    got = program.module()(x)
    ref_leaves, got_leaves = tree_leaves(ref), tree_leaves(got)
    assert len(got_leaves) == len(ref_leaves), "exported outputs differ in structure"
    for g, r in zip(got_leaves, ref_leaves):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", params_for("channels_last"), indirect=True)
def test_channels_last(case: Case) -> None:
    fmt = torch.channels_last if case.dims == 2 else torch.channels_last_3d
    x = image(3, case.size)
    ref = main(case.eager(x))
    model = copy.deepcopy(case.model).to(memory_format=fmt)
    with torch.no_grad():
        got = main(model(x.contiguous(memory_format=fmt)))
    scale = max(1.0, float(ref.abs().max()))
    torch.testing.assert_close(got, ref, atol=1e-4 * scale, rtol=1e-4)


@pytest.mark.parametrize("case", params_for("bf16"), indirect=True)
def test_bf16_autocast(case: Case) -> None:
    x = image(3, case.size)
    ref = main(case.eager(x))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = main(case.model(x))
    assert got.shape == ref.shape and torch.isfinite(got).all()
    assert rel_err(got, ref) < 0.05, f"bf16 relative error {rel_err(got, ref):.3f}"
    # No backward here: on torch 2.14 / oneDNN 3.12 a bf16 Conv3d weight gradient is now and then NaN when the
    # input also needs a gradient (about 1 call in 150 at 4^3 with 5^3 kernels), which would make this flaky.


def _pad_far_end(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad the spatial axes of ``x`` at their far end up to ``size``."""
    pad: list[int] = []
    for have, want in zip(reversed(x.shape[2:]), reversed(size)):
        pad += [0, want - have]
    return F.pad(x, pad)


@pytest.mark.parametrize("case", params_for("odd_sizes"), indirect=True)
def test_odd_sizes(case: Case) -> None:
    odd = tuple(s + k for s, k in zip(case.size, (1, 3, 5)))
    assert all(s % case.divisor for s in odd) or case.divisor == 1
    x = image(3, odd)
    up = tuple(-(-s // case.divisor) * case.divisor for s in odd)
    if case.tiny.odd == "raise":
        with pytest.raises(ValueError) as info:
            case.eager(x)
        msg = str(info.value)
        assert str(odd) in msg, f"the error should name the size it got: {msg}"
        assert re.search(r"pad|resize|crop|img_size", msg), f"the error should say how to fix it: {msg}"
        if getattr(case.model, "fixed_input_size", None) is None:  # the sizes it asks for do work
            assert main(case.eager(image(3, up))).shape[2:] == up
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = main(case.eager(x))
    assert out.shape == (2, case.tiny.out_channels, *odd) and torch.isfinite(out).all()
    if case.tiny.odd == "pad":
        padded = main(case.eager(_pad_far_end(x, up)))
        crop = padded[(..., *(slice(0, s) for s in odd))]
        torch.testing.assert_close(out, crop, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", params_for("in_channels"), indirect=True)
def test_in_channels(case: Case) -> None:
    assert main(case.eager(image(3, case.size))).shape == (2, case.tiny.out_channels, *case.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gray = build(case.name, in_channels=1)
    with torch.no_grad():
        out = main(gray(image(1, case.size)))
    assert out.shape == (2, case.tiny.out_channels, *case.size) and torch.isfinite(out).all()
