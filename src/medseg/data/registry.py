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
@register_data_kind("synthetic2d", volumes=False, divisible=False)
def synthetic2d(cfg: Any, split: str) -> "Dataset":
    """Seeded synthetic 2-D shapes (no download; fixed train/val/test cases)."""
    from medseg.data.datasets2d import Synthetic2D

    return Synthetic2D(cfg, split)


@register_data_kind("folder2d", volumes=False, divisible=True)
def folder2d(cfg: Any, split: str) -> "Dataset":
    """PNG/JPG/TIFF image and mask folders (``images/``, ``masks/``)."""
    from medseg.data.datasets2d import Folder2D

    return Folder2D(cfg, split)


@register_data_kind("nifti", volumes=True, divisible=True)
def nifti(cfg: Any, split: str) -> "Dataset":
    """NIfTI volumes in the nnU-Net / MSD layout (``imagesTr/``, ``labelsTr/``)."""
    from medseg.data.nifti import NiftiVolumes

    return NiftiVolumes(cfg, split)


@register_data_kind("synthetic3d", volumes=True, divisible=False)
def synthetic3d(cfg: Any, split: str) -> "Dataset":
    """Seeded synthetic 3-D volumes (no download; fixed train/val/test cases)."""
    from medseg.data.volumes import Synthetic3D

    return Synthetic3D(cfg, split)


@register_data_kind("mixture", volumes=False, divisible=True)
def mixture(cfg: Any, split: str) -> "Dataset":
    """Several binary 2-D datasets in one, sampled by weight (IFE's many-modality model)."""
    from medseg.data.mixture import Mixture

    return Mixture(cfg, split)
