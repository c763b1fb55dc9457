"""Surface distances: medpy and MONAI oracles (2-D, 3-D, anisotropic), properties, the empty table."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from medpy.metric import binary as mb
from scipy.ndimage import binary_opening

from medseg.metrics import EmptyMaskError, MetricSuite, asd, assd, hd, hd95, nsd, surface_distances

REL = 1e-6
ALL = ["hd", "hd95", "asd", "assd"]


def _blob(rng: np.random.Generator, shape: tuple[int, ...], p: float = 0.6) -> np.ndarray:
    mask = binary_opening(rng.random(shape) < p)
    return mask if mask.any() else np.pad(np.ones([2] * len(shape), bool), [(0, n - 2) for n in shape])


def _check_medpy(pred: np.ndarray, gt: np.ndarray, spacing) -> None:
    values = MetricSuite(ALL)(pred, gt, spacing=spacing).values
    assert values["hd"] == pytest.approx(mb.hd(pred, gt, voxelspacing=spacing), rel=REL)
    assert values["hd95"] == pytest.approx(mb.hd95(pred, gt, voxelspacing=spacing), rel=REL)
    assert values["asd"] == pytest.approx(mb.asd(pred, gt, voxelspacing=spacing), rel=REL)
    assert values["assd"] == pytest.approx(mb.assd(pred, gt, voxelspacing=spacing), rel=REL)


@pytest.mark.parametrize("shape,spacing", [((41, 57), None), ((41, 57), (0.7, 0.7)), ((33, 28), (0.5, 1.7)),
                                           ((14, 17, 11), (0.8, 0.8, 2.5)), ((12, 10, 9), None)])
def test_distances_equal_medpy(shape, spacing) -> None:
    rng = np.random.default_rng(len(shape) * 7 + shape[0])
    for _ in range(4):
        _check_medpy(_blob(rng, shape), _blob(rng, shape), spacing)


def test_small_object_in_large_volume_and_touching_the_border() -> None:
    pred = np.zeros((40, 36, 20), bool)
    gt = np.zeros((40, 36, 20), bool)
    pred[10:14, 5:9, 3:6] = True
    gt[11:16, 6:10, 0:5] = True  # touches the volume's edge: the outside counts as background
    _check_medpy(pred, gt, (0.8, 0.8, 2.5))
    pred2 = np.zeros((30, 30), bool)
    pred2[0:6, 20:30] = True
    gt2 = np.zeros((30, 30), bool)
    gt2[2:9, 24:30] = True
    _check_medpy(pred2, gt2, None)


def test_real_brats_crop(real_dataset) -> None:
    import nibabel as nib

    folder = real_dataset("brats2015-deepmedic")
    img = nib.load(str(folder / "masks" / "brats_2013_pat0001_1" / "OTMultiClass.nii.gz"))
    labels = np.rint(np.asanyarray(img.dataobj)).astype(np.int64)
    core = np.argwhere(labels > 0)
    lo = core.min(0)
    crop = labels[lo[0]:lo[0] + 40, lo[1]:lo[1] + 40, lo[2]:lo[2] + 30]
    spacing = (1.0, 1.0, 2.0)  # pretend anisotropic to exercise sampling
    whole, enhancing = crop > 0, crop == 4
    _check_medpy(enhancing, whole, spacing)
    _check_medpy(np.isin(crop, (1, 3, 4)), whole, spacing)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_monai_max_directed_hd95_and_surface_dice() -> None:
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(5)
    for shape, spacing in (((40, 44), (1.0, 1.0)), ((16, 14, 10), (0.8, 0.8, 2.5))):
        for _ in range(3):
            pred, gt = _blob(rng, shape), _blob(rng, shape)
            yp = torch.from_numpy(np.stack([~pred, pred])[None].astype(np.float32))
            yt = torch.from_numpy(np.stack([~gt, gt])[None].astype(np.float32))
            ref = compute_hausdorff_distance(yp, yt, percentile=95, spacing=list(spacing)).item()
            ours = hd95(pred, gt, spacing=spacing, hd95_mode="max_directed")
            assert ours == pytest.approx(ref, rel=REL)
            for tol in (1.3, 2.7):
                ref_nsd = compute_surface_dice(yp, yt, [tol], spacing=list(spacing)).item()
                assert nsd(pred, gt, spacing=spacing, nsd_tolerance=tol) == pytest.approx(ref_nsd, rel=REL)


def test_translation_hd_equals_shift_and_symmetry() -> None:
    pred = np.zeros((50, 60), bool)
    pred[10:25, 12:30] = True
    for shift in (1, 4, 9):
        moved = np.roll(pred, shift, axis=1)
        assert hd(pred, moved) == pytest.approx(shift)
        assert hd(pred, moved, spacing=(2.0, 0.5)) == pytest.approx(shift * 0.5)
    rng = np.random.default_rng(3)
    a, b = _blob(rng, (30, 31)), _blob(rng, (30, 31))
    for fn in (hd, hd95, assd, nsd):
        assert fn(a, b) == pytest.approx(fn(b, a))
    assert asd(a, b) == pytest.approx(mb.asd(a, b)) and asd(b, a) == pytest.approx(mb.asd(b, a))


def test_padding_invariance() -> None:
    rng = np.random.default_rng(4)
    a, b = _blob(rng, (20, 22, 9)), _blob(rng, (20, 22, 9))
    pa, pb = np.pad(a, 7), np.pad(b, 7)
    for name in ("hd", "hd95", "asd", "assd", "nsd"):
        suite = MetricSuite([name])
        assert suite(a, b, spacing=(1, 1, 3)).values[name] == pytest.approx(
            suite(pa, pb, spacing=(1, 1, 3)).values[name])


def test_empty_table_worst_value_is_the_diagonal() -> None:
    empty = np.zeros((288, 384), bool)
    some = empty.copy()
    some[100:120, 50:90] = True
    for name in ALL:
        suite = MetricSuite([name])
        assert suite(empty, empty).values[name] == 0.0
        assert suite(some, empty).values[name] == pytest.approx(480.0)  # sqrt(384^2 + 288^2)
        assert suite(empty, some).values[name] == pytest.approx(480.0)
        assert suite(empty, some, spacing=(0.5, 0.5)).values[name] == pytest.approx(240.0)
        assert np.isnan(MetricSuite([name], empty="nan")(empty, some).values[name])
        assert MetricSuite([name], compat="ife")(empty, some).values[name] == 0.0
        with pytest.raises(EmptyMaskError):
            MetricSuite([name], compat="medpy")(empty, some)
    assert nsd(empty, empty) == 1.0 and nsd(some, empty) == 0.0


def test_assd_modes_and_one_pass_shared() -> None:
    rng = np.random.default_rng(6)
    a, b = _blob(rng, (25, 25)), _blob(rng, (25, 25))
    sd = surface_distances(a, b)
    mean_of = (mb.asd(a, b) + mb.asd(b, a)) / 2
    assert assd(a, b, assd_mode="mean_of_directed") == pytest.approx(mean_of, rel=REL)
    assert assd(a, b, compat="ife") == pytest.approx(mean_of, rel=REL)
    pooled = np.concatenate([sd.pred_to_gt, sd.gt_to_pred]).mean()
    assert assd(a, b) == pytest.approx(pooled, rel=REL)


def test_spacing_errors_name_the_case() -> None:
    a = np.zeros((5, 5, 5), bool)
    a[1:3, 1:3, 1:3] = True
    with pytest.raises(ValueError, match=r"case 'vol3'.*3 dimensions"):
        MetricSuite(["hd95"])(a, a, spacing=(1.0, 1.0), case="vol3")
    with pytest.raises(ValueError, match="positive"):
        hd95(a, a, spacing=(1.0, 0.0, 1.0))
