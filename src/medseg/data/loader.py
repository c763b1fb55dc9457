"""``build_dataset`` / ``build_loader``: config -> Dataset -> DataLoader, reproducible per (seed, epoch).

Reproducibility: the train sampler yields ``(index, sample_seed)`` keys. The order comes from a
``torch.Generator`` seeded with ``sample_seed(seed, epoch)``; each sample's augmentation seed is
``sample_seed(seed, epoch, index, position)``. The per-batch size (``train_sizes``) is drawn in the
collate function from the seeds of the batch's samples. Nothing depends on worker ids or on the
global RNG, so a given (seed, epoch) gives bit-identical batches with any ``num_workers``.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medseg.config import DataConfig
from medseg.data.splits import SPLITS
from medseg.data.transforms import resize_batch, sample_seed
from medseg.errors import DataError

_MEMO: OrderedDict[str, Dataset] = OrderedDict()  # decoded-case caches survive between epochs
_MEMO_SIZE = 6


def build_dataset(cfg: DataConfig, split: str) -> Dataset:
    """The ``Dataset`` of ``split`` ("train", "val" or "test") for ``cfg.kind`` (``medseg.data.registry``).

    Items are sample dicts (``image``, ``label``, ``meta``); see ``medseg.data`` for the layout per kind.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
    from medseg.data.registry import create_dataset

    return create_dataset(cfg, split)


def cached_dataset(cfg: DataConfig, split: str) -> Dataset:
    """``build_dataset`` memoised on (config, split), so per-epoch loaders reuse decoded cases."""
    key = json.dumps([cfg.model_dump(mode="json"), split], sort_keys=True)
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    ds = build_dataset(cfg, split)
    _MEMO[key] = ds
    while len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return ds


_EMPTY_WHY = {"train": "there is nothing to train on",
              "val": "training would validate nothing and keep no best.pt",
              "test": "evaluation would score nothing"}


def require_cases(ds: Dataset, split: str, cfg: DataConfig) -> Dataset:
    """``ds`` when it has items; an empty split is a :class:`DataError` naming it, the data and the fixes."""
    if len(ds) > 0:
        return ds
    s = cfg.split
    where = f"data folder {cfg.root}" if cfg.root else f"data.kind={cfg.kind}"
    if s.mode == "file":
        fix = f"list cases under '{split}' in {s.file}" + (
            " (or drop its 'val' list to carve data.split.val_fraction from train)" if split == "val" else "")
    elif split == "train":
        fix = f"lower data.split.val_fraction / test_fraction (now {s.val_fraction} / {s.test_fraction})"
    else:
        fix = f"set data.split.{split}_fraction (now {getattr(s, split + '_fraction')}) so that it gets >= 1 case"
    raise DataError(f"the '{split}' split of {where} has no cases (data.split.mode={s.mode}): {_EMPTY_WHY[split]}. "
                    f"Fixes: {fix}; add cases; or, for a smoke test only, data.split.mode=fixed "
                    "(every case in every split)")


# ------------------------------------------------------------------------------------ samplers
class EpochSampler(Sampler):
    """Yields ``(index, sample_seed)``: a permutation (or weighted draw with replacement when the
    dataset has ``sample_weights``) that is a pure function of ``(seed, epoch)``."""

    def __init__(self, n: int, seed: int, epoch: int, shuffle: bool, weights: Sequence[float] | None = None) -> None:
        self.n, self.seed, self.epoch, self.shuffle = n, int(seed), int(epoch), shuffle
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        gen = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch))
        if self.weights is not None and self.shuffle:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=gen).tolist()
        elif self.shuffle:
            order = torch.randperm(self.n, generator=gen).tolist()
        else:
            order = list(range(self.n))
        for pos, idx in enumerate(order):
            yield idx, sample_seed(self.seed, self.epoch, idx, pos)


class KeyedSampler(Sampler):
    """Wraps a given sampler (e.g. ``DistributedSampler``): its indices plus per-sample seeds."""

    def __init__(self, sampler: Sampler, seed: int, epoch: int) -> None:
        self.sampler, self.seed, self.epoch = sampler, int(seed), int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for pos, idx in enumerate(self.sampler):
            yield int(idx), sample_seed(self.seed, self.epoch, int(idx), pos)


# ------------------------------------------------------------------------------------ collate
def collate(batch: list[dict[str, Any]], sizes: Sequence[int] | None = None, binary: bool = True,
            targets: Sequence[str] | None = None, num_classes: int = 1) -> dict[str, Any]:
    """Stack ``image``/``label`` (and any other tensor keys); ``meta`` stays a list of dicts.

    With ``sizes``, the batch is resized to a square side drawn from ``sizes`` by a generator
    seeded from the samples' ``aug_seed`` (IFE's per-batch random resize). ``targets`` names derived
    targets (``medseg.ops.prepare_targets`` keys such as ``"sdf"``) computed here, after augmentation and
    resizing, so that with ``num_workers > 0`` they are built in the workers, overlapped with training.
    """
    out: dict[str, Any] = {"meta": [b["meta"] for b in batch]}
    for key in batch[0]:
        if key != "meta":
            out[key] = torch.stack([b[key] for b in batch])
    if sizes:
        seeds = [int(m.get("aug_seed", 0)) & 0xFFFFFFFF for m in out["meta"]]
        side = int(sizes[np.random.default_rng(seeds).integers(len(sizes))])
        spatial = out["image"].ndim - 2
        out["image"], out["label"] = resize_batch(out["image"], out["label"], [side] * spatial, binary)
    if targets:
        from medseg.ops import prepare_targets

        prepare_targets(out, set(targets), num_classes=num_classes)
    return out


def build_loader(
    cfg: DataConfig,
    split: str,
    *,
    seed: int = 0,
    epoch: int = 0,
    sampler: Sampler | None = None,
    drop_last: bool | None = None,
    dataset: Dataset | None = None,
    targets: Sequence[str] | None = None,
) -> DataLoader:
    """DataLoader of ``split``: train is shuffled by (seed, epoch) (or by ``sampler``), augmented,
    and resized per batch when ``cfg.train_sizes`` is set; val/test keep their order. Whole-volume
    items (3-D val/test) are loaded one per batch. ``dataset`` reuses an already built dataset.
    ``targets``: derived training targets (e.g. ``{"sdf"}``) computed in the collate (see :func:`collate`)."""
    ds = require_cases(dataset if dataset is not None else cached_dataset(cfg, split), split, cfg)
    train = split == "train"
    if cfg.num_workers > 0 and hasattr(ds, "warm_cache"):
        ds.warm_cache()  # decode once in the parent so every epoch's forked workers share it
    if sampler is not None:
        keyed: Sampler = KeyedSampler(sampler, seed, epoch)
    else:
        keyed = EpochSampler(len(ds), seed, epoch, shuffle=train, weights=getattr(ds, "sample_weights", None))
    whole_volumes = not train and getattr(ds, "whole_volumes", False)
    batch_size = 1 if whole_volumes else cfg.batch_size
    if drop_last is None:
        drop_last = train and len(ds) > batch_size
    sizes = cfg.train_sizes if train else None
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=keyed,
        num_workers=cfg.num_workers,
        collate_fn=partial(collate, sizes=sizes, binary=cfg.num_classes == 1,
                           targets=sorted(targets) if train and targets else None, num_classes=cfg.num_classes),
        drop_last=drop_last,
        pin_memory=False,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(sample_seed(seed, epoch, 1)),  # not the global RNG
    )
