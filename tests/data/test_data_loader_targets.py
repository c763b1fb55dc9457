"""Distance targets built by the loader's collate (in the workers when num_workers > 0)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg.config import DataConfig
from medseg.data import build_loader


def kervadec_sdf(mask: np.ndarray) -> np.ndarray:
    """Oracle from scipy's exact EDT: outside d(x, object), inside -(d(x, background) - 1)."""
    if not mask.any() or mask.all():
        return np.zeros(mask.shape, np.float32)
    outside = ndimage.distance_transform_edt(~mask)
    inside = ndimage.distance_transform_edt(mask)
    return np.where(mask, 1.0 - inside, outside)


def test_loader_builds_sdf_after_augmentation() -> None:
    cfg = DataConfig(kind="synthetic2d", image_size=[32, 32], in_channels=1, batch_size=4,
                     synthetic={"n_train": 8, "n_val": 2, "n_test": 2}, train_sizes=[24, 32])
    batch = next(iter(build_loader(cfg, "train", seed=0, epoch=0, targets={"sdf"})))
    assert batch["sdf"].shape == batch["label"].shape  # one channel per foreground class, resized batch
    for label, sdf in zip(batch["label"][:, 0].numpy() > 0.5, batch["sdf"][:, 0].numpy()):
        np.testing.assert_allclose(sdf, kervadec_sdf(label), atol=1e-5)
    plain = next(iter(build_loader(cfg, "train", seed=0, epoch=0)))
    assert "sdf" not in plain
