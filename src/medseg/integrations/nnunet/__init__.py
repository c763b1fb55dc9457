"""medseg's methods as nnU-Net v2 trainers (optional extra: ``pip install 'medseg[nnunet]'``; ``docs/nnunet.md``).

* trainers (built on first access, they subclass ``nnunetv2``'s ``nnUNetTrainer``): see
  :data:`~medseg.integrations.nnunet.trainers.TRAINERS`, e.g.
  ``from medseg.integrations.nnunet import nnUNetTrainerIFECurvature``;
* :func:`~medseg.integrations.nnunet.run.train` / :func:`~medseg.integrations.nnunet.run.predict`: nnU-Net's
  own training and prediction with these trainers (``medseg nnunet train|predict``);
* :func:`~medseg.integrations.nnunet.convert.convert_folder`: a medseg 2-D folder (images/ + masks/) to nnU-Net's
  raw layout (``medseg nnunet convert``; needs no nnunetv2);
* :func:`~medseg.integrations.nnunet.run.ext_trainer_dir`: the folder to put in nnU-Net's
  ``nnUNet_extTrainer`` variable so that plain ``nnUNetv2_train ... -tr nnUNetTrainerIFECurvature`` finds them.
"""
from __future__ import annotations

from medseg.integrations.nnunet.trainers import TRAINERS, trainer_classes

__all__ = ["TRAINERS", "trainer_classes", *TRAINERS]


def __getattr__(name: str):
    if name in TRAINERS:
        return trainer_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
