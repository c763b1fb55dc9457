"""What IFE selects: for one image, the highest- and lowest-scored channels at every IFE point.

Liu et al., MICCAI 2023, Fig. 1/5: channels with a high curvature or entropy score carry texture and
edges, low-scored ones are flat. ``ife_maps(checkpoint, image, output)`` runs the checkpoint's model on the
image (preprocessed exactly as in training), captures the input of every :class:`~medseg.modules.IFE`
module, scores its channels and draws one row per IFE point: the image, then the ``top`` highest- and
``bottom`` lowest-scored channels with their channel index and score.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from medseg.errors import UserError
from medseg.modules.ife import IFE
from medseg.report import save_figure


@dataclass
class IFEPoint:
    """One IFE insertion point for one image: its feature map ``C x *spatial`` and channel scores ``C``."""

    name: str
    score: str
    ratio: float
    features: torch.Tensor
    scores: torch.Tensor

    @property
    def selected(self) -> int:
        return int(self.ratio * self.features.shape[0])


def capture_ife_points(model: nn.Module, image: torch.Tensor) -> list[IFEPoint]:
    """Run ``model`` on ``image`` (``1 x C x H x W``) in eval mode and score the input of every IFE module."""
    modules = [(name, m) for name, m in model.named_modules() if isinstance(m, IFE)]
    if not modules:
        raise UserError("the model has no IFE module (model.kwargs.ife is null); ife-maps needs a model built "
                        "with ife='curvature' or ife='entropy'")
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, key=name: seen.__setitem__(key, args[0].detach()))
             for name, m in modules]
    try:
        model.eval()
        with torch.no_grad():
            model(image)
    finally:
        for h in hooks:
            h.remove()
    points = []
    for name, m in modules:
        if name in seen:
            feat = seen[name][:1]
            points.append(IFEPoint(m.name, m.score if m.score == "curvature" else f"entropy/{m.entropy_mode}",
                                   m.ratio, feat[0].float().cpu(), m.scores(feat)[0].cpu()))
    return points


def _show(ax, array: np.ndarray, title: str, cmap: str | None = "viridis") -> None:
    ax.imshow(array, cmap=cmap, interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_ife_points(points: list[IFEPoint], image: np.ndarray, path: str | Path, top: int = 4,
                    bottom: int = 4) -> Path:
    """One row per IFE point: the image, ``top`` highest- and ``bottom`` lowest-scored channel maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 1 + top + bottom
    fig, axes = plt.subplots(len(points), cols, figsize=(1.6 * cols, 2.2 * len(points) + 0.3), squeeze=False)
    for row, p in zip(axes, points):
        _show(row[0], image, f"{p.name}\n{p.score}, keeps {p.selected}/{p.features.shape[0]}",
              cmap="gray" if image.ndim == 2 else None)
        order = torch.argsort(p.scores, descending=True).tolist()
        picks = [(c, "high") for c in order[:top]] + [(c, "low") for c in order[::-1][:bottom][::-1]]
        for ax, (c, kind) in zip(row[1:], picks):
            fmap = p.features[c]
            fmap = fmap if fmap.dim() == 2 else fmap[fmap.shape[0] // 2]  # 3-D: middle slice
            rank = order.index(c) + 1
            _show(ax, fmap.numpy(), f"{kind} #{rank}: ch {c}\ns={float(p.scores[c]):.4g}")
    fig.suptitle("IFE channel scores (left: highest, right: lowest)", fontsize=9)
    return save_figure(fig, path)


def ife_maps(checkpoint: str | Path, image: str | Path, output: str | Path | None = None, top: int = 4,
             bottom: int = 4) -> Path:
    """Draw the IFE channel maps of ``checkpoint`` (a file or a run folder) for one 2-D ``image`` file."""
    from medseg.data.io import read_image
    from medseg.engine.checkpoint import resolve_checkpoint
    from medseg.engine.predict import prepare_image
    from medseg.engine.trainer import model_from_checkpoint

    image = Path(image)
    if not image.is_file():
        raise UserError(f"image not found: {image}")
    if top < 1 or bottom < 0:
        raise UserError(f"--top must be >= 1 and --bottom >= 0, got {top} and {bottom}")
    model, cfg = model_from_checkpoint(resolve_checkpoint(checkpoint, "best"))
    if cfg.spatial_dims != 2:
        raise UserError("ife-maps draws 2-D images; this checkpoint is a 3-D model")
    tensor, _, _ = prepare_image(image, cfg)
    points = capture_ife_points(model, tensor)
    shown = read_image(image)
    output = Path(output) if output else image.with_name(f"{image.stem}_ife_maps.png")
    return plot_ife_points(points, shown, output, min(top, min(len(p.scores) for p in points)), bottom)
