"""Reusable network building blocks: IFE (instructive feature enhancement), ASPP, heads.

``from medseg.modules import IFE`` puts IFE into any network in one line::

    self.ife = IFE(0.75, score="curvature", channels=128, name="skip2")
    y = self.ife(x)   # cat([x, top-96 channels of x]) -> 224 channels
"""
from __future__ import annotations

import importlib.util

from medseg.modules.aspp import ASPP
from medseg.modules.ife import ENTROPY_MODES, IFE, curvature_scores, entropy_scores, make_ife

__all__ = ["ASPP", "ENTROPY_MODES", "IFE", "curvature_scores", "entropy_scores", "make_ife"]

if importlib.util.find_spec("medseg.modules.heads") is not None:  # heads.py is owned by the CHNet work
    from medseg.modules import heads  # noqa: F401
