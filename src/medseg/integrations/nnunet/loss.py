"""medseg's CWCD loss behind nnU-Net's loss interface ``loss(logits, target) -> scalar`` (``docs/nnunet.md``).

nnU-Net calls its loss once per deep-supervision scale with that scale's logits ``B x K x *spatial`` and
its augmented, downsampled label ``B x 1 x *spatial``. This wrapper builds the medseg batch from that label,
computes the CWCD contour bands on the device from it (:func:`medseg.ops.targets.prepare_targets`: min-pool
erosion, cube 3, 6 iterations by default; ``docs/cwcd.md``), and returns
``L_CWCD = L_CWCE + L_SDL`` of :class:`medseg.losses.cwcd.CWCDLoss` (Eq. 11), the same value as
``create_loss("cwcd")`` on the same tensors.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from medseg.losses import create_loss
from medseg.ops.targets import prepare_targets


class NNUNetCWCDLoss(nn.Module):
    """``L_CWCD(logits, label)`` for one nnU-Net output scale.

    Args:
        num_classes: nnU-Net's ``label_manager.num_segmentation_heads`` (background included).
        ignore_label: nnU-Net's ignore label (``label_manager.ignore_label``), excluded from the CE; ``None``
            keeps CWCD's default ``ignore_index`` (100).
        **cwcd_kwargs: options of ``create_loss("cwcd")`` (``compat``, ``lambda_c``, ``lam``, ``kernel``,
            ``iterations``).
    """

    def __init__(self, num_classes: int, ignore_label: int | None = None, **cwcd_kwargs: Any) -> None:
        super().__init__()
        if ignore_label is not None:
            cwcd_kwargs.setdefault("ignore_index", int(ignore_label))
        self.num_classes = int(num_classes)
        self.cwcd = create_loss("cwcd", **cwcd_kwargs)

    def batch(self, target: torch.Tensor) -> dict:
        """The medseg batch for a nnU-Net target ``B x 1 x *spatial``: ``label`` and the contour bands."""
        label = target[:, 0].long() if target.dim() > 2 and target.shape[1] == 1 else target.long()
        return prepare_targets({"label": label}, self.cwcd.requires, self.num_classes)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.cwcd(logits, self.batch(target))["loss"]
