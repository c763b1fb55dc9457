"""Folder for nnU-Net's ``nnUNet_extTrainer`` variable (see ``medseg_nnunet_trainers.py``)."""
