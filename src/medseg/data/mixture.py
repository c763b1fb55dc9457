"""A binary "mixture" dataset: several 2-D sources (folders, slices of volumes) sampled by weight.

``data.datasets`` lists member configs (any ``DataConfig`` keys plus ``weight``, ``name``,
``modality``); keys a member leaves out come from the mixture's own config, so ``image_size``,
``in_channels``, ``normalize``, ``augment`` and ``split`` are shared (a member can override ``split``,
e.g. with its own split file); folder keys (``root``, ``images_dir``, ``mask_*``) are not inherited. Members are forced binary
(``num_classes: 1``); a ``nifti``/``synthetic3d`` member yields 2-D slices along ``nifti.slice_axis``
(default 2) in every split (``slice_eval: slices``), resized to ``image_size``.

Training draws dataset ``d`` with probability ``w_d / Σ w`` (each item carries weight
``w_d / len(d)``; the sampler draws ``len(mixture)`` items with replacement), so a small dataset can
be seen as often as a large one. Each sample's meta carries ``dataset`` and ``modality`` for
per-dataset metrics.
"""
from __future__ import annotations

import bisect
from typing import Any

import numpy as np
from pydantic import ValidationError
from torch.utils.data import Dataset

from medseg.config import DataConfig, deep_merge
from medseg.errors import DataError

_SHARED_EXCLUDE = {"datasets", "kind", "root", "name", "modality", "weight", "images_dir", "masks_dir",
                   "mask_suffix", "mask_mode", "mask_threshold"}


def member_config(parent: DataConfig, entry: dict[str, Any], index: int) -> DataConfig:
    """Validate member ``index`` of ``parent.datasets`` over the parent's shared keys."""
    if not isinstance(entry, dict) or "kind" not in entry:
        raise DataError(f"data.datasets[{index}] must be a mapping with at least 'kind' (and 'root'), got {entry!r}")
    shared = parent.model_dump(mode="json", exclude=_SHARED_EXCLUDE)
    raw = deep_merge(shared, entry)
    raw.update(num_classes=1, image_size=list(parent.image_size), in_channels=parent.in_channels)
    if raw["kind"] == "mixture":
        raise DataError(f"data.datasets[{index}]: a mixture cannot contain another mixture")
    if raw["kind"] in ("nifti", "synthetic3d"):
        nifti = dict(raw.get("nifti") or {})
        nifti.setdefault("slice_axis", 2)
        if nifti["slice_axis"] is None:
            nifti["slice_axis"] = 2
        nifti.update(slice_eval="slices", patch_size=None)
        raw["nifti"] = nifti
    try:
        return DataConfig.model_validate(raw)
    except ValidationError as err:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise DataError(f"data.datasets[{index}] is not a valid data config: {msgs}") from None


class Mixture(Dataset):
    """Concatenation of binary 2-D member datasets with per-dataset sampling weights."""

    spatial_dims = 2
    whole_volumes = False

    def __init__(self, cfg: DataConfig, split: str) -> None:
        from medseg.data.loader import build_dataset

        if not cfg.datasets:
            raise DataError("data.kind is 'mixture' but data.datasets is empty; list the member datasets")
        if cfg.num_classes != 1:
            raise DataError(f"a mixture dataset is binary: set data.num_classes: 1 (got {cfg.num_classes})")
        if len(cfg.image_size) != 2:
            raise DataError(f"a mixture dataset is 2-D: data.image_size needs 2 entries, got {cfg.image_size}")
        self.cfg, self.split = cfg, split
        self.members = [member_config(cfg, e, i) for i, e in enumerate(cfg.datasets)]
        self.parts = [build_dataset(m, split) for m in self.members]
        self.names = [getattr(p, "name", f"dataset{i}") for i, p in enumerate(self.parts)]
        dupes = {n for n in self.names if self.names.count(n) > 1}
        if dupes:
            raise DataError(f"mixture members share the names {sorted(dupes)}; give each a distinct 'name'")
        self.modalities = [m.modality or (m.nifti.modality if m.kind == "nifti" else "") for m in self.members]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts]).tolist()
        weights = [m.weight for m in self.members]
        self.sample_weights = np.concatenate(
            [np.full(len(p), w / max(len(p), 1)) for p, w in zip(self.parts, weights)]
        ).tolist()
        if sum(self.sample_weights) <= 0:
            raise DataError("every mixture member has weight 0 or no cases in this split")

    @property
    def ids(self) -> list[str]:
        return [f"{n}/{i}" for n, p in zip(self.names, self.parts) for i in p.ids]

    def __len__(self) -> int:
        return self.offsets[-1]

    def _locate(self, i: int) -> tuple[int, int]:
        d = bisect.bisect_right(self.offsets, i) - 1
        return d, i - self.offsets[d]

    def _tag(self, meta: dict[str, Any], d: int) -> dict[str, Any]:
        return dict(meta, dataset=self.names[d], modality=self.modalities[d], id=f"{self.names[d]}/{meta['id']}")

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        i, seed = key if isinstance(key, tuple) else (int(key), None)
        d, j = self._locate(i)
        sample = self.parts[d][(j, seed) if seed is not None else j]
        sample["meta"] = self._tag(sample["meta"], d)
        return sample

    def read_original(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        d, j = self._locate(i)
        label, meta = self.parts[d].read_original(j)
        return label, self._tag(meta, d)

    def warm_cache(self) -> None:
        for p in self.parts:
            if hasattr(p, "warm_cache"):
                p.warm_cache()
