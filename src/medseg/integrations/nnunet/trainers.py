"""nnU-Net v2 trainers with medseg's methods (``docs/nnunet.md``).

Each trainer is a subclass of nnU-Net's ``nnUNetTrainer`` that overrides one hook and keeps the rest of
nnU-Net (planning, preprocessing, patch sampling, augmentation, deep supervision and its weights, sliding-
window inference, post-processing):

* ``nnUNetTrainerIFECurvature`` / ``nnUNetTrainerIFEEntropy``: ``build_network_architecture`` builds nnU-Net's
  planned network and puts IFE (Liu et al., MICCAI 2023) on the skips of encoder stages 2 and 3
  (:func:`medseg.integrations.nnunet.network.add_ife`; ``docs/ife.md``). Ratios: the paper's best UNet
  settings, curvature (0.75, 0.50) and entropy (0.50, 0.50) (paper Table 2). Other ratios: subclass and set
  ``ife_ratios`` (a new class name, so nnU-Net's result folder and the predictor find the same network).
* ``nnUNetTrainerCWCD``: ``_build_loss`` returns the CWCD loss (Huang et al.; ``docs/cwcd.md``) wrapped in
  nnU-Net's ``DeepSupervisionWrapper`` with the weights nnU-Net's own ``_build_loss`` computes
  (``w_i ∝ 2^-i``, lowest scale 0, normalised to sum 1); contours are computed on the device from each
  scale's augmented label.
* ``...Adam1e4`` variants and the baseline ``nnUNetTrainerAdam1e4Step``: the IFE paper's optimiser
  (paper, Sec. 3): Adam, lr 1e-4, ×0.1 every 50 epochs, 100 epochs (nnU-Net epochs of 250 iterations), no weight decay.

The classes need ``nnunetv2``; they are built on first use (:func:`trainer_classes`) so that importing medseg
never requires the optional extra.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch.optim.lr_scheduler import LRScheduler

from medseg.integrations.nnunet.errors import require_nnunet
from medseg.integrations.nnunet.loss import NNUNetCWCDLoss
from medseg.integrations.nnunet.network import IFE_STAGES, IFEPlanError, add_ife

PAPER_RATIOS = {"curvature": (0.75, 0.5), "entropy": (0.5, 0.5)}

TRAINERS: dict[str, str] = {
    "nnUNetTrainerIFECurvature": "IFE (curvature, ratios 0.75/0.50 on encoder stages 2/3); nnU-Net's optimiser",
    "nnUNetTrainerIFEEntropy": "IFE (entropy, ratios 0.50/0.50 on encoder stages 2/3); nnU-Net's optimiser",
    "nnUNetTrainerCWCD": "CWCD loss (contour-weighted CE + separable Dice) at every deep-supervision scale",
    "nnUNetTrainerAdam1e4Step": "plain nnU-Net with the IFE paper's optimiser (Adam 1e-4, x0.1 every 50 of 100 "
                                "epochs): the baseline of the IFE comparison",
    "nnUNetTrainerIFECurvatureAdam1e4": "IFE curvature with the IFE paper's optimiser",
    "nnUNetTrainerIFEEntropyAdam1e4": "IFE entropy with the IFE paper's optimiser",
}


class StepDecayLR(LRScheduler):
    """``lr = initial_lr · gamma^floor(epoch / step_epochs)``, stepped as nnU-Net steps its schedulers
    (``step(current_epoch)`` at each epoch start)."""

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, step_epochs: int,
                 gamma: float = 0.1) -> None:
        self.initial_lr, self.step_epochs, self.gamma, self.ctr = initial_lr, int(step_epochs), gamma, 0
        super().__init__(optimizer, -1)

    def step(self, current_step: int | None = None) -> None:  # type: ignore[override]
        if current_step is None or current_step == -1:
            current_step, self.ctr = self.ctr, self.ctr + 1
        lr = self.initial_lr * self.gamma ** (int(current_step) // self.step_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


@lru_cache(maxsize=1)
def trainer_classes() -> dict[str, type]:
    """The trainer classes by name (imports nnunetv2; one clear error when it is missing)."""
    require_nnunet()
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainerIFE(nnUNetTrainer):
        """nnU-Net with IFE on the skips of ``ife_stages`` (1 = full resolution) with ``ife_ratios``."""

        ife_score: str = "curvature"
        ife_ratios: tuple[float, ...] = PAPER_RATIOS["curvature"]
        ife_stages: tuple[int, ...] = IFE_STAGES
        ife_entropy_mode: str = "hist1d"

        @classmethod
        def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                       num_output_channels: int, enable_deep_supervision: bool = True):
            network = super().build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                          num_output_channels, enable_deep_supervision)
            return add_ife(network, cls.ife_score, cls.ife_ratios, cls.ife_stages, cls.ife_entropy_mode)

    class nnUNetTrainerIFECurvature(nnUNetTrainerIFE):
        ife_score, ife_ratios = "curvature", PAPER_RATIOS["curvature"]

    class nnUNetTrainerIFEEntropy(nnUNetTrainerIFE):
        ife_score, ife_ratios = "entropy", PAPER_RATIOS["entropy"]

    class nnUNetTrainerCWCD(nnUNetTrainer):
        """nnU-Net with the CWCD loss at every deep-supervision scale (nnU-Net's scale weights)."""

        cwcd_kwargs: dict = {}

        def _build_loss(self):
            if self.label_manager.has_regions:
                raise IFEPlanError(f"{type(self).__name__}: CWCD is a softmax (one label per voxel) loss and this "
                                   f"dataset is region-based (dataset.json 'regions_class_order'); use a label-based "
                                   f"dataset or nnU-Net's own trainer")
            base = super()._build_loss()  # nnU-Net's loss: only its deep-supervision weights are kept
            loss = NNUNetCWCDLoss(self.label_manager.num_segmentation_heads, self.label_manager.ignore_label,
                                  **self.cwcd_kwargs)
            if isinstance(base, DeepSupervisionWrapper):
                return DeepSupervisionWrapper(loss, base.weight_factors)
            return loss

    class _PaperAdamStep(nnUNetTrainer):
        """The IFE paper's optimiser: Adam (no weight decay), lr ×``lr_gamma`` every ``lr_step_epochs``."""

        paper_lr, paper_epochs, lr_step_epochs, lr_gamma = 1e-4, 100, 50, 0.1

        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cuda")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.initial_lr, self.num_epochs, self.weight_decay = self.paper_lr, self.paper_epochs, 0.0

        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr,
                                         weight_decay=self.weight_decay)
            return optimizer, StepDecayLR(optimizer, self.initial_lr, self.lr_step_epochs, self.lr_gamma)

    class nnUNetTrainerAdam1e4Step(_PaperAdamStep):
        pass

    class nnUNetTrainerIFECurvatureAdam1e4(_PaperAdamStep, nnUNetTrainerIFECurvature):
        pass

    class nnUNetTrainerIFEEntropyAdam1e4(_PaperAdamStep, nnUNetTrainerIFEEntropy):
        pass

    found = {name: value for name, value in locals().items() if name in TRAINERS}
    for name, cls in found.items():  # importable as medseg.integrations.nnunet.<name>
        cls.__module__, cls.__qualname__ = "medseg.integrations.nnunet", name
        cls.__doc__ = cls.__doc__ or TRAINERS[name]
    assert set(found) == set(TRAINERS), sorted(set(TRAINERS) ^ set(found))
    return found
