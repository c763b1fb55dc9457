"""The data-kind registry: ``data.kind`` in a config names an entry here, as ``model.name`` names a model.

Each entry is a factory ``(DataConfig, split) -> Dataset`` plus two facts the rest of medseg needs without
building anything: whether the kind gives 3-D volumes (``volumes``; a ``nifti.slice_axis`` then turns them
into 2-D slices) and whether it has case ids that a split can divide (``divisible``; ``medseg cv`` needs it).
Factories import their module when called, so validating a config imports no reader.

Adding a data source is one module (the ``Dataset`` class, items as the sample dicts of ``medseg.data``)
and one entry::

    @register_data_kind("my_kind", volumes=False, divisible=True)
    def my_kind(cfg, split):
        \"\"\"PNG pairs listed in a CSV.\"\"\"
        from medseg.data.my_kind import MyKind
        return MyKind(cfg, split)

after which ``data: {kind: my_kind, ...}`` validates and trains like any other kind.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

from medseg.registry import Registry

if TYPE_CHECKING:
    from torch.utils.data import Dataset

DATA_KINDS = Registry("data kind")
DatasetFactory = Callable[[Any, str], "Dataset"]


def register_data_kind(name: str, *, volumes: bool, divisible: bool) -> Callable[[DatasetFactory], DatasetFactory]:
    """Register ``factory(cfg, split)`` under ``name``; ``volumes``: gives 3-D volumes (unless
    ``nifti.slice_axis``); ``divisible``: its case ids can be divided into folds / splits."""

    def wrap(factory: DatasetFactory) -> DatasetFactory:
        factory.volumes = volumes  # type: ignore[attr-defined]
        factory.divisible = divisible  # type: ignore[attr-defined]
        return DATA_KINDS.register(name)(factory)

    return wrap


def data_kind(name: str) -> DatasetFactory:
    """The registered factory of ``name`` (a :class:`~medseg.registry.RegistryError` listing the kinds)."""
    return DATA_KINDS.get(name)


def gives_volumes(kind: str) -> bool:
    """True when ``kind`` gives 3-D volumes (before any ``nifti.slice_axis``)."""
    return bool(getattr(data_kind(kind), "volumes", False))


def is_divisible(kind: str) -> bool:
    """True when ``kind`` has case ids that a split (or ``medseg cv``) can divide."""
    return bool(getattr(data_kind(kind), "divisible", True))


def create_dataset(cfg: Any, split: str) -> "Dataset":
    """The ``Dataset`` of ``split`` for ``cfg.kind`` (a :class:`~medseg.config.DataConfig`)."""
    return data_kind(cfg.kind)(cfg, split)


# ------------------------------------------------------------------------------------ built-in kinds
def _lazy(module: str, attr: str, doc: str) -> DatasetFactory:
    """A factory that imports ``module`` only when a dataset is built (config validation stays light)."""

    def factory(cfg: Any, split: str) -> "Dataset":
        return getattr(importlib.import_module(module), attr)(cfg, split)

    factory.__doc__, factory.__name__ = doc, attr
    return factory


for _name, _module, _attr, _volumes, _divisible, _doc in [
    ("synthetic2d", "medseg.data.datasets2d", "Synthetic2D", False, False,
     "Seeded synthetic 2-D shapes (no download; fixed train/val/test cases)."),
    ("folder2d", "medseg.data.datasets2d", "Folder2D", False, True,
     "PNG/JPG/TIFF image and mask folders (images/, masks/)."),
    ("nifti", "medseg.data.nifti", "NiftiVolumes", True, True,
     "NIfTI volumes in the nnU-Net / MSD layout (imagesTr/, labelsTr/)."),
    ("synthetic3d", "medseg.data.volumes", "Synthetic3D", True, False,
     "Seeded synthetic 3-D volumes (no download; fixed train/val/test cases)."),
    ("mixture", "medseg.data.mixture", "Mixture", False, True,
     "Several binary 2-D datasets in one, sampled by weight (IFE's many-modality model)."),
]:
    register_data_kind(_name, volumes=_volumes, divisible=_divisible)(_lazy(_module, _attr, _doc))
