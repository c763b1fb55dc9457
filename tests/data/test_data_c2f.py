"""Coarse-to-fine (MLL/MLN) data path: 3-slice units per view, HU scaling, RSTN slice sampling, the phantom."""
from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medseg.config import NiftiConfig, SplitConfig
from medseg.data.nifti import discover, normalize_volume
from medseg.data.phantom import HU, PhantomSpec, make_phantom, write_phantom_dataset
from medseg.data.splits import split_ids
from medseg.data.views import (VIEWS, extract_units, load_case, load_ct_volume, read_spacing, reassemble_units,
                               training_slices, training_units, view_axis, window_scale)
from medseg.errors import DataError

SMALL = PhantomSpec(shape=(48, 40, 12), spacing=(3.0, 3.0, 6.0), target_length=60.0, target_radius=6.0)


@pytest.mark.parametrize("view", VIEWS)
def test_units_extract_then_reassemble_is_identity(view):
    vol = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    axis = view_axis(view)
    units = extract_units(vol, axis)
    assert units.shape == (vol.shape[axis], 3, *np.delete(vol.shape, axis))
    np.testing.assert_allclose(reassemble_units(units, axis), vol, rtol=1e-6, atol=1e-6)


def test_unit_channels_are_neighbour_slices_with_edges_repeated():
    vol = np.arange(4)[None, None, :] * np.ones((2, 2, 4))  # slice k holds the value k along axis 2
    units = extract_units(vol, 2)
    assert units[:, :, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]


def test_reassembly_averages_3_inside_and_2_at_the_ends():
    """Unit i's output is the constant i: slice j is the mean of the unit indices that hold it (hand-worked)."""
    n = 5
    units = np.broadcast_to(np.arange(n, dtype=np.float64)[:, None, None, None], (n, 3, 2, 2)).copy()
    vol = reassemble_units(units, 0)
    assert vol[:, 0, 0].tolist() == pytest.approx([0.5, 1.0, 2.0, 3.0, 3.5])


def test_view_axis_follows_the_affine_orientation():
    permuted = np.array([[0, 0, -1.5, 0], [0, -0.8, 0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])  # axis 0 is S-I
    assert (view_axis("axial", permuted), view_axis("coronal", permuted), view_axis("sagittal", permuted)) == (0, 1, 2)
    assert (view_axis("axial"), view_axis("coronal"), view_axis("sagittal")) == (2, 1, 0)
    with pytest.raises(DataError, match="unknown view"):
        view_axis("oblique")


def test_view_with_fewer_than_3_slices_names_the_file():
    with pytest.raises(DataError, match=r"case_007_0000\.nii\.gz: only 2 slices along axis 2.*at least 3"):
        extract_units(np.zeros((8, 8, 2)), 2, source="imagesTr/case_007_0000.nii.gz")


def test_window_scale_hand_values():
    hu = np.array([-1000.0, -100.0, 70.0, 240.0, 500.0])
    assert window_scale(hu, (-100, 240)).tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    with pytest.raises(DataError, match="high must be greater"):
        window_scale(hu, (240, -100))


def test_nifti_reader_window01_option():
    hu = np.array([[-1000.0, -100.0, 70.0, 240.0, 500.0]])
    scaled = normalize_volume(hu, NiftiConfig(modality="CT", window=(-100, 240), ct_scale="window01"))
    assert scaled.tolist()[0] == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    zscored = normalize_volume(hu, NiftiConfig(modality="CT", window=(-100, 240)))  # default unchanged
    assert abs(float(zscored.mean())) < 1e-6
    with pytest.raises(DataError, match="needs data.nifti.window"):
        normalize_volume(hu, NiftiConfig(modality="CT", ct_scale="window01"))


def _label_with_areas(areas):
    lab = np.zeros((len(areas), 10, 12), dtype=np.uint8)
    for k, a in enumerate(areas):
        lab[k].flat[:a] = 1
    return lab


def test_training_slices_rstn_rule_hand_worked():
    # 100 positive slices of areas 1..100 and one empty: k = floor(0.98 * 100) = 98, the 98th largest area is 3
    areas = [0] + list(range(1, 101))
    assert training_slices(_label_with_areas(areas), 0).tolist() == list(range(3, 101))
    # P = 3: k = floor(2.94) = 2, the 2nd largest area is 5 -> slices 1 and 3; empty slices never
    assert training_slices(_label_with_areas([0, 5, 1, 7, 0]), 0).tolist() == [1, 3]
    assert training_slices(_label_with_areas([0, 4, 0]), 0).tolist() == [1]  # P = 1 keeps the one slice
    assert training_slices(_label_with_areas([0, 0]), 0).size == 0


def test_phantom_same_seed_same_bytes(tmp_path, monkeypatch):
    files = []
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        monkeypatch.setattr(gzip.time, "time", lambda run=run: 1.7e9 + 86400 * ord(run))  # written on other days
        write_phantom_dataset(tmp_path / run, n=1, seed=seed, spec=SMALL)
        files.append((tmp_path / run / "imagesTr" / "phantom_000_0000.nii.gz").read_bytes())
    assert files[0] == files[1]
    assert files[0] != files[2]


def test_phantom_target_size_hu_and_spacing(tmp_path):
    spec = PhantomSpec()
    ids = write_phantom_dataset(tmp_path, n=2, seed=0, spec=spec)
    assert [c.id for c in discover(tmp_path, _nnunet_cfg())] == ids
    image, spacing, affine = load_ct_volume(tmp_path / "imagesTr" / f"{ids[0]}_0000.nii.gz")
    label, _, _ = load_ct_volume(tmp_path / "labelsTr" / f"{ids[0]}.nii.gz")
    assert spacing == spec.spacing and np.diag(affine)[:3].tolist() == list(spec.spacing)
    target = label > 0
    # volume of a tube with hemispherical caps: pi r^2 L + 4/3 pi r^3
    expected = np.pi * spec.target_radius**2 * spec.target_length + 4 / 3 * np.pi * spec.target_radius**3
    assert target.sum() * np.prod(spec.spacing) == pytest.approx(expected, rel=0.1)
    xs = np.nonzero(target)[0] * spec.spacing[0]
    assert 0.8 * spec.target_length <= xs.max() - xs.min() <= spec.target_length + 2 * spec.target_radius
    assert float(image[target].mean()) == pytest.approx(HU["target"], abs=3.0)

@pytest.mark.parametrize("spec", [PhantomSpec(), PhantomSpec((48, 40, 12), (3.0, 3.0, 6.0), 40.0, 8.0)],
                         ids=["default", "recipe"])
def test_phantom_target_is_visible(spec):
    """The target stands out from the voxels around it by at least twice the noise (it used to be 45 HU in
    40 HU tissue with 15 HU noise: invisible voxel by voxel, and the phantom recipe learnt nothing)."""
    for seed in range(3):
        image, label, _ = make_phantom(seed, spec)
        target = label > 0
        ring = ndimage.binary_dilation(target, iterations=2) & ~target
        contrast = float(image[target].mean()) - float(np.median(image[ring]))
        assert contrast >= 2 * spec.noise, (seed, contrast)
    assert float(make_phantom(0, PhantomSpec(target_hu=45.0))[0][make_phantom(0)[1] > 0].mean()) == \
        pytest.approx(45.0, abs=3.0)  # a harder phantom is one argument away


def test_phantom_refuses_to_overwrite(tmp_path):
    write_phantom_dataset(tmp_path, n=1, spec=SMALL)
    with pytest.raises(DataError, match="already holds a dataset"):
        write_phantom_dataset(tmp_path, n=1, spec=SMALL)
    write_phantom_dataset(tmp_path, n=1, seed=1, spec=SMALL, overwrite=True)


def test_volume_without_spacing_is_refused_naming_the_file(tmp_path):
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    img.header["pixdim"][1:4] = 0
    path = tmp_path / "nospacing.nii.gz"
    path.write_bytes(gzip.compress(img.to_bytes()))
    with pytest.raises(DataError, match=r"nospacing\.nii\.gz: the header has no valid voxel spacing"):
        read_spacing(path)
    _, spacing, _ = load_ct_volume(path, window=(-100, 240), spacing=(0.7, 0.7, 2.5))  # documented fallback
    assert spacing == (0.7, 0.7, 2.5)


def test_per_volume_4fold_and_fixed_splits():
    ids = [f"phantom_{i:03d}" for i in range(8)]
    tests = [split_ids(ids, SplitConfig(mode="kfold", folds=4, fold=f, val_fraction=0), "test") for f in range(4)]
    assert sorted(sum(tests, [])) == ids and all(len(t) == 2 for t in tests)
    train0 = split_ids(ids, SplitConfig(mode="kfold", folds=4, fold=0, val_fraction=0), "train")
    assert not set(train0) & set(tests[0])
    assert split_ids(ids, SplitConfig(mode="fixed"), "test") == ids


def _nnunet_cfg():
    from medseg.config import DataConfig

    return DataConfig(kind="nifti", nifti=NiftiConfig(modality="CT", layout="nnunet"))


def test_load_case_checks_label_shape_and_affine(tmp_path):
    write_phantom_dataset(tmp_path, n=1, spec=SMALL)
    img_path, lab_path = tmp_path / "imagesTr" / "phantom_000_0000.nii.gz", tmp_path / "labelsTr" / "phantom_000.nii.gz"
    image, label, spacing, _ = load_case(img_path, lab_path, (-100, 240))
    assert image.shape == label.shape == SMALL.shape and spacing == SMALL.spacing
    assert 0.0 <= image.min() and image.max() <= 1.0 and set(np.unique(label)) == {0, 1}
    raw = nib.load(str(lab_path))
    shifted = tmp_path / "shifted.nii.gz"
    aff = raw.affine.copy()
    aff[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(raw.dataobj), aff), str(shifted))
    with pytest.raises(DataError, match=r"shifted\.nii\.gz and image .*different affines"):
        load_case(img_path, shifted, (-100, 240))
    cut = tmp_path / "cut.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(raw.dataobj)[:, :, :-1], raw.affine), str(cut))
    with pytest.raises(DataError, match=r"cut\.nii\.gz has shape \(48, 40, 11\) but image"):
        load_case(img_path, cut, (-100, 240))


def test_training_units_skip_and_count_cases_without_target(tmp_path):
    write_phantom_dataset(tmp_path, n=2, spec=SMALL)
    labels = {i: tmp_path / "labelsTr" / f"{i}.nii.gz" for i in ("phantom_000", "phantom_001")}
    raw = nib.load(str(labels["phantom_001"]))
    nib.save(nib.Nifti1Image(np.zeros(raw.shape, np.uint8), raw.affine), str(tmp_path / "empty.nii.gz"))
    labels["empty_case"] = tmp_path / "empty.nii.gz"
    with pytest.warns(UserWarning, match=r"1 of 3 training cases have no target voxels.*empty_case"):
        units, skipped = training_units(labels, "axial")
    assert skipped == ["empty_case"]
    ids = ("phantom_000", "phantom_001")
    expected = {i: training_slices(nib.load(str(labels[i])).get_fdata() > 0, 2).tolist() for i in ids}  # axial = 2
    assert units == [(i, s) for i in ids for s in expected[i]]
    assert all(s in range(SMALL.shape[2]) for _, s in units) and len(units) > 2
