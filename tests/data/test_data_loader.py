"""Loaders: order and augmentation are a pure function of (seed, epoch), across worker counts."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from medseg.config import AugmentConfig, DataConfig
from medseg.data import build_dataset, build_loader
from medseg.data.transforms import apply_augment_2d, build_augment_2d

AUG = dict(hflip=0.5, vflip=0.5, rotate_deg=30, brightness=0.2, contrast=0.2, crop_scale=(0.6, 1.0))


def small_cfg(**kw) -> DataConfig:
    base = dict(image_size=[32, 32], batch_size=4, synthetic=dict(n_train=12, n_val=4, n_test=4), augment=AUG)
    base.update(kw)
    return DataConfig.model_validate(base)


def batches(cfg: DataConfig, seed: int, epoch: int) -> list[dict]:
    return list(build_loader(cfg, "train", seed=seed, epoch=epoch))


def test_bit_identical_with_zero_and_two_workers():
    cfg0 = small_cfg(num_workers=0, train_sizes=[24, 32, 40])
    cfg2 = small_cfg(num_workers=2, train_sizes=[24, 32, 40])
    a, b = batches(cfg0, 5, 3), batches(cfg2, 5, 3)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
        assert [m["id"] for m in x["meta"]] == [m["id"] for m in y["meta"]]


def test_epoch_and_seed_change_order_and_augmentation():
    cfg = small_cfg()
    e0, e0b, e1 = batches(cfg, 0, 0), batches(cfg, 0, 0), batches(cfg, 0, 1)
    ids = lambda bs: [m["id"] for b in bs for m in b["meta"]]  # noqa: E731
    assert ids(e0) == ids(e0b) and ids(e0) != ids(e1)
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(e0, e0b))
    assert sorted(ids(e0)) == sorted(ids(e1))  # a permutation of the same cases (12 / batch 4, none dropped)
    assert ids(e0) != ids(batches(cfg, 1, 0))


def test_global_rng_is_left_alone():
    cfg = small_cfg()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    batches(cfg, 0, 0)
    assert torch.equal(torch.rand(3), expected)


def test_train_sizes_per_batch_and_binary_labels_stay_binary():
    cfg = small_cfg(train_sizes=[16, 24, 48], synthetic=dict(n_train=40, n_val=4, n_test=4))
    bs = batches(cfg, 0, 0)
    sides = {b["image"].shape[-1] for b in bs}
    assert len(sides) >= 2 and sides <= {16, 24, 48}
    for b in bs:
        assert b["image"].shape[-2] == b["image"].shape[-1] == b["label"].shape[-1]
        assert set(b["label"].unique().tolist()) <= {0.0, 1.0}
    val = next(iter(build_loader(cfg, "val")))
    assert val["image"].shape[-2:] == (32, 32)  # val keeps image_size


def test_val_items_are_not_augmented_and_meta_is_a_list():
    cfg = small_cfg()
    ds = build_dataset(cfg, "val")
    b = next(iter(build_loader(cfg, "val")))
    assert isinstance(b["meta"], list) and len(b["meta"]) == 4
    assert torch.equal(b["image"][0], ds[0]["image"])
    assert [m["id"] for m in b["meta"]] == ds.ids[:4]


def test_augmentation_moves_image_and_mask_together():
    """Oracle: a flip-only pipeline (p = 1) equals torch.flip; rotation keeps mask = f(image)."""
    pipe = build_augment_2d(AugmentConfig(hflip=1.0, vflip=1.0, rotate_p=0), (8, 8), 1)
    img = torch.rand(1, 8, 8)
    lab = (img[0] > 0.5).long()
    out_i, out_l = apply_augment_2d(pipe, img, lab, seed=0)
    assert torch.equal(out_i, img.flip(-1, -2)) and torch.equal(out_l, lab.flip(-1, -2))
    # rotation by 90 degrees (the only angle in [90, 90]) of a mask that equals the image
    pipe = build_augment_2d(AugmentConfig(hflip=0, rotate_deg=90, rotate_p=1.0), (8, 8), 1)
    pipe.transforms[0].transforms[0].degrees = [90.0, 90.0]
    mask = torch.zeros(8, 8, dtype=torch.long)
    mask[1:4, 2:7] = 1
    out_i, out_l = apply_augment_2d(pipe, mask[None].float(), mask, seed=1)
    assert torch.equal(out_l, torch.rot90(mask, 1, (0, 1)))
    assert torch.equal(out_i[0].round().long(), out_l)


def test_distributed_sampler_is_used():
    cfg = small_cfg()
    ds = build_dataset(cfg, "train")
    ids = []
    for rank in (0, 1):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(2)
        loader = build_loader(cfg, "train", sampler=sampler, epoch=2, drop_last=False)
        ids.append([m["id"] for b in loader for m in b["meta"]])
    assert len(ids[0]) == len(ids[1]) == 6 and not set(ids[0]) & set(ids[1])


def test_bad_split_name():
    with pytest.raises(ValueError, match="split"):
        build_dataset(small_cfg(), "training")


def test_volume_patches_identical_with_zero_and_two_workers():
    kw = dict(kind="synthetic3d", image_size=[16, 24, 24], in_channels=1, batch_size=2,
              synthetic=dict(n_train=2, n_val=1, n_test=1), nifti=dict(patch_size=[8, 16, 16], samples_per_volume=2))
    a = batches(DataConfig.model_validate(dict(kw, num_workers=0)), 4, 1)
    b = batches(DataConfig.model_validate(dict(kw, num_workers=2)), 4, 1)
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
        assert [m["patch_origin"] for m in x["meta"]] == [m["patch_origin"] for m in y["meta"]]
