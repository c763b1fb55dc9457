"""nnU-Net's external-trainer hook: put this folder in ``nnUNet_extTrainer`` (``medseg nnunet trainer-path``)
and ``nnUNetv2_train`` / ``nnUNetv2_predict`` find medseg's trainers by name (``docs/nnunet.md``)."""
from medseg.integrations.nnunet.trainers import trainer_classes

globals().update(trainer_classes())
