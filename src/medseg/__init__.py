"""medseg: PyTorch toolkit for medical image segmentation.

Methods implemented (see ``docs/`` and the spec): IFE (instructive feature enhancement), CHNet
(classification-head network), MLL/MLN (multi-level structural loss/network), CWCD (contour-weighted
CE + separable Dice), with a fast, oracle-tested metric suite.
"""
__version__ = "0.1.0"
