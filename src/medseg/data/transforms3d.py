"""3-D augmentation of training patches with MONAI dictionary transforms (``data.augment3d``).

Rotation (each axis within ``rotate_deg``), an independent flip per axis, isotropic scaling (size kept) and
intensity gamma, each with its own probability. The image is interpolated linearly, the label by nearest
neighbour; gamma touches the image only. Reproducibility: :func:`augment_3d` seeds every random transform
from the sample's seed (``Compose.set_random_state``), so a patch's augmentation depends only on its key
``(seed, epoch, index, position)``. Contours and other derived targets are computed from the augmented
label afterwards (``medseg.ops.prepare_targets``), so they always match it.
"""
from __future__ import annotations

import math

import torch

from medseg.config import Augment3DConfig


def build_augment_3d(cfg: Augment3DConfig):
    """The MONAI ``Compose`` for keys ``image`` (``C x D x H x W``) and ``label`` (``1 x D x H x W``), or None."""
    if not cfg.enabled:
        return None
    from monai.transforms import Compose, RandAdjustContrastd, RandFlipd, RandRotated, RandZoomd

    keys, rad = ("image", "label"), math.radians(cfg.rotate_deg)
    ops: list = [RandRotated(keys, range_x=rad, range_y=rad, range_z=rad, prob=cfg.rotate_p,
                             mode=("bilinear", "nearest"), padding_mode="zeros", keep_size=True)]
    ops += [RandFlipd(keys, prob=p, spatial_axis=d) for d, p in enumerate(cfg.flip_p)]
    ops.append(RandZoomd(keys, prob=cfg.scale_p, min_zoom=cfg.scale_range[0], max_zoom=cfg.scale_range[1],
                         mode=("trilinear", "nearest"), padding_mode="constant", keep_size=True))
    ops.append(RandAdjustContrastd("image", prob=cfg.gamma_p, gamma=tuple(cfg.gamma_range)))
    return Compose(ops, lazy=False)


def augment_3d(pipeline, image: torch.Tensor, label: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``pipeline`` to ``image`` (``C x *S`` float) and ``label`` (``*S`` int) under ``seed``."""
    if pipeline is None:
        return image, label
    pipeline.set_random_state(seed=int(seed) & 0xFFFFFFFF)
    out = pipeline({"image": image.float(), "label": label[None].float()})
    img = torch.as_tensor(out["image"]).as_subclass(torch.Tensor).float().contiguous()
    lab = torch.as_tensor(out["label"]).as_subclass(torch.Tensor)[0]
    return img, torch.round(lab).to(label.dtype).contiguous()


def applied(pipeline) -> list[str]:
    """Names of the transforms of ``pipeline`` that fired on its last call (for tests and debugging)."""
    return [type(t).__name__ + (f"[{t.flipper.spatial_axis}]" if hasattr(t, "flipper") else "")
            for t in pipeline.transforms if getattr(t, "_do_transform", False)]


