"""Adapters that run medseg's methods inside other frameworks (each behind an optional extra).

* :mod:`medseg.integrations.nnunet`: IFE and the CWCD loss as nnU-Net v2 trainers (``pip install
  'medseg[nnunet]'``, ``docs/nnunet.md``).
"""
