"""3-D data pipeline: MONAI reorientation and resampling (and back to the file's grid), class-balanced patch
sampling, 3-D augmentation keys and probabilities, and the data side of the bad inputs. Oracles: nibabel's
orientation code, hand-built arrays, binomial bounds."""
from __future__ import annotations

import itertools
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.config import Augment3DConfig, DataConfig
from medseg.data import build_dataset
from medseg.data.resample import to_network_grid, to_original_grid
from medseg.data.transforms import sample_seed
from medseg.data.transforms3d import augment_3d, build_augment_3d
from medseg.data.volumes import VolumeDataset
from medseg.errors import DataError

RNG = np.random.default_rng(7)
LPS2 = np.array([[-2.0, 0, 0, 10.0], [0, -2.0, 0, 20.0], [0, 0, 2.0, -5.0], [0, 0, 0, 1]])  # LPS, 2 mm


def _save(arr, path, affine=LPS2):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), path)


def _flat_case(root, shape=(10, 8, 6), img_affine=LPS2, lab_affine=None, lab_shape=None, label_max=2, img4d=False):
    img = RNG.normal(100, 10, shape).astype(np.float32)
    lab = np.zeros(lab_shape or shape, np.uint8)
    lab[2:6, 2:5, 1:4] = 1
    lab[3, 3, 2] = label_max
    _save(img[..., None].repeat(2, -1) if img4d else img, root / "images" / "a.nii.gz", img_affine)
    _save(lab, root / "masks" / "a.nii.gz", img_affine if lab_affine is None else lab_affine)
    return img, lab


def _cfg(root, **nifti):
    return DataConfig.model_validate(dict(kind="nifti", root=str(root), in_channels=1, num_classes=3,
                                          split=dict(mode="fixed"), nifti=dict(layout="flat", **nifti)))


# ------------------------------------------------------------------------------ geometry
def test_resample_to_1mm_and_back_is_exact_where_spacing_divides():
    lab = RNG.integers(0, 4, (10, 8, 6))
    img = RNG.normal(size=(2, 10, 8, 6)).astype(np.float32)
    img2, lab2, grid = to_network_grid(img, lab, LPS2, "RAS", [1.0, 1.0, 1.0])
    assert grid["spacing"] == (1.0, 1.0, 1.0) and lab2.shape == img2.shape[1:]
    # oracle: nibabel's canonical (RAS) orientation of the label, then every 2nd voxel of the 1 mm grid
    ras = nib.orientations.apply_orientation(lab, nib.orientations.io_orientation(LPS2))
    np.testing.assert_array_equal(lab2[::2, ::2, ::2], ras)
    # nearest: a voxel between two original ones takes one of their labels (linear would invent a new one)
    mid = lab2[1::2, ::2, ::2]
    assert np.all((mid == ras[:-1]) | (mid == ras[1:]))
    meta = {"affine": LPS2.tolist(), "original_shape": lab.shape, "grid": grid}
    back = to_original_grid(lab2, meta)
    assert back.shape == lab.shape and back.dtype == lab.dtype
    np.testing.assert_array_equal(back, lab)  # labels: nearest, exact
    logits = torch.nn.functional.one_hot(torch.from_numpy(lab2), 4).permute(3, 0, 1, 2)[None].float()
    back_logits = to_original_grid(logits, meta)  # logits: linear, exact on the coinciding voxels
    assert back_logits.shape == (1, 4, *lab.shape)
    np.testing.assert_array_equal(back_logits.argmax(1)[0].numpy(), lab)
    np.testing.assert_allclose(to_original_grid(torch.from_numpy(img2)[None], meta)[0].numpy(), img, atol=1e-5)


def test_non_divisor_spacing_keeps_label_values_both_ways():
    lab = np.where(RNG.random((9, 7, 5)) < 0.5, 0, 7) + (RNG.random((9, 7, 5)) < 0.2) * 3  # 0, 3, 7, 10
    _, lab2, grid = to_network_grid(np.zeros((1, 9, 7, 5), np.float32), lab, LPS2, None, [1.3, 1.7, 0.9])
    assert set(np.unique(lab2)) <= set(np.unique(lab))
    back = to_original_grid(lab2, {"affine": LPS2.tolist(), "original_shape": lab.shape, "grid": grid})
    assert back.shape == lab.shape and set(np.unique(back)) <= set(np.unique(lab))


def test_orientation_round_trip_gives_original_array_and_affine():
    img = RNG.normal(size=(1, 7, 6, 5)).astype(np.float32)
    lab = RNG.integers(0, 3, (7, 6, 5))
    aff = np.array([[0, 0, -1.5, 4.0], [-0.8, 0, 0, 2.0], [0, 1.2, 0, -3.0], [0, 0, 0, 1]])  # permuted, flipped
    img2, lab2, grid = to_network_grid(img, lab, aff, "RAS", None)
    canon = nib.as_closest_canonical(nib.Nifti1Image(lab.astype(np.int16), aff))  # oracle
    np.testing.assert_array_equal(lab2, np.asarray(canon.dataobj))
    np.testing.assert_allclose(np.asarray(grid["affine"]), canon.affine, atol=1e-6)
    code = "".join(nib.orientations.aff2axcodes(aff))
    img3, lab3, grid3 = to_network_grid(img2, lab2, np.asarray(grid["affine"]), code, None)
    np.testing.assert_array_equal(img3, img)
    np.testing.assert_array_equal(lab3, lab)
    np.testing.assert_allclose(np.asarray(grid3["affine"]), aff, atol=1e-6)
    meta = {"affine": aff.tolist(), "original_shape": lab.shape, "grid": grid}
    np.testing.assert_array_equal(to_original_grid(lab2, meta), lab)


def test_nifti_dataset_resamples_and_scores_on_the_file_grid(tmp_path):
    img, lab = _flat_case(tmp_path)
    ds = build_dataset(_cfg(tmp_path, orientation="RAS", target_spacing=[1, 1, 1]), "test")
    s = ds[0]
    assert s["image"].shape == (1, 19, 15, 11) and s["meta"]["grid"]["spacing"] == (1.0, 1.0, 1.0)
    gt, meta = ds.read_original(0)
    np.testing.assert_array_equal(gt, lab)  # scored against the file's label, not the resampled one
    assert meta["spacing"] == (2.0, 2.0, 2.0)
    np.testing.assert_array_equal(to_original_grid(s["label"].numpy(), meta), lab)
    plain = build_dataset(_cfg(tmp_path), "test")[0]
    assert "grid" not in plain["meta"] and plain["image"].shape == (1, 10, 8, 6)


def test_predict_case_returns_the_input_grid(tmp_path):
    from medseg.config import RunConfig
    from medseg.engine.predict import predict_case
    from medseg.engine.runtime import make_runtime

    lab = np.zeros((10, 8, 6), np.float32)
    lab[2:7, 1:5, 2:5] = 1
    lab[8, 6, 0] = 1
    _save(lab * 50 + 1, tmp_path / "x.nii.gz")

    class Thresh(torch.nn.Module):  # logits [0, x - mean]: foreground where the intensity is high
        spatial_dims, input_divisor = 3, 1

        def forward(self, x):
            return torch.cat([torch.zeros_like(x[:, :1]), x[:, :1]], 1)

    cfg = RunConfig.model_validate(dict(data=dict(kind="nifti", in_channels=1, num_classes=2, image_size=[8, 8, 8],
                                                  nifti=dict(modality="MRI", orientation="RAS",
                                                             target_spacing=[1, 1, 1]))))
    labels, _ = predict_case(Thresh(), [tmp_path / "x.nii.gz"], cfg, make_runtime(cfg.train, 3))
    assert labels.shape == lab.shape
    np.testing.assert_array_equal(labels, lab)


def test_evaluate_scores_and_saves_on_the_file_grid(tmp_path, monkeypatch):
    """An oracle 'model' that returns the one-hot network-grid label: DSC 1 and the file's label saved only if
    the logits are mapped back through the reorientation and the resampling."""
    import medseg.engine.evaluate as ev
    from medseg.config import RunConfig

    _, lab = _flat_case(tmp_path / "d")
    cfg = RunConfig.model_validate(dict(
        data=dict(kind="nifti", root=str(tmp_path / "d"), in_channels=1, num_classes=3, image_size=[8, 8, 8],
                  split=dict(mode="fixed"), nifti=dict(layout="flat", orientation="RAS", target_spacing=[1, 1, 1])),
        model=dict(name="unet3d"), eval=dict(metrics=["dice"])))
    net_label = build_dataset(cfg.data, "test")[0]["label"]
    oracle = torch.nn.functional.one_hot(net_label, 3).permute(3, 0, 1, 2)[None].float() * 10
    monkeypatch.setattr(ev, "resolve_checkpoint", lambda run_dir, which: tmp_path / "x.pt")
    monkeypatch.setattr(ev, "model_from_checkpoint", lambda path: (torch.nn.Identity(), cfg))
    monkeypatch.setattr(ev, "case_logits", lambda model, image, cfg, rt: oracle)
    (tmp_path / "run").mkdir()
    summary = ev.evaluate_run(tmp_path / "run", "test", progress=False)
    assert summary["metrics"]["dice"]["mean"] == pytest.approx(1.0)
    saved = nib.load(str(tmp_path / "run" / "predictions" / "test" / "a.nii.gz"))
    np.testing.assert_array_equal(np.asarray(saved.dataobj), lab)
    np.testing.assert_allclose(saved.affine, LPS2)


# ----------------------------------------------------------------------- class balance
class _Toy(VolumeDataset):
    """One 32^3 volume: class 1 a large block, class 2 one voxel in a far corner."""

    def __init__(self, cfg):
        super().__init__(cfg, "train", ["toy"], "toy")

    def _read(self, k):
        label = np.zeros((32, 32, 32), np.int64)
        label[12:30, 12:30, 12:30] = 1
        label[1, 1, 1] = 2
        meta = {"id": "toy", "spacing": (1.0,) * 3, "original_shape": label.shape, "affine": np.eye(4).tolist()}
        return np.zeros((1, 32, 32, 32), np.float32), label, meta


def _rare_rate(oversample: str, p: float = 0.6, n: int = 400) -> float:
    cfg = DataConfig.model_validate(dict(kind="synthetic3d", in_channels=1, num_classes=3, image_size=[32, 32, 32],
                                         augment=dict(enabled=False), nifti=dict(
                                             patch_size=[8, 8, 8], fg_oversample=p, samples_per_volume=1,
                                             oversample=oversample)))
    ds = _Toy(cfg)
    hits = sum(int((ds[(0, sample_seed(3, 0, 0, j))]["label"] == 2).any()) for j in range(n))
    return hits / n


def test_class_balanced_sampling_reaches_rare_class_at_configured_rate():
    # classes: p/2 of patches centred on class 2, plus uniform patches that reach the corner ((6/32)^3 of 0.4)
    expected = 0.6 / 2 + 0.4 * (6 / 32) ** 3
    rate = _rare_rate("classes")
    assert abs(rate - expected) < 4 * np.sqrt(expected * (1 - expected) / 400), (rate, expected)
    assert _rare_rate("foreground") < 0.05  # any-foreground oversampling almost never finds it


# -------------------------------------------------------------------------- augmentation
def _aug(**kw):
    base = dict(enabled=True, rotate_p=0.0, flip_p=[0.0, 0.0, 0.0], scale_p=0.0, gamma_p=0.0)
    return build_augment_3d(Augment3DConfig(**{**base, **kw}))


IMG = torch.from_numpy(RNG.normal(size=(2, 12, 10, 8)).astype(np.float32))
LAB = torch.from_numpy(RNG.integers(0, 3, (12, 10, 8)))


def test_augment3d_p0_is_identity_and_disabled_is_none():
    a, b = augment_3d(_aug(), IMG, LAB, 11)
    assert torch.equal(a, IMG) and torch.equal(b, LAB) and b.dtype == LAB.dtype
    assert build_augment_3d(Augment3DConfig(enabled=False)) is None


@pytest.mark.parametrize("key", ["rotate_p", "scale_p", "gamma_p"])
def test_augment3d_p1_applies(key):
    a, b = augment_3d(_aug(**{key: 1.0}), IMG, LAB, 11)
    assert not torch.equal(a, IMG)
    if key == "gamma_p":  # intensity only: a label with many values would show any gamma
        assert torch.equal(b, LAB) and torch.equal(
            augment_3d(_aug(gamma_p=1.0, gamma_range=(1.4, 1.5)), IMG, LAB * 4, 11)[1], LAB * 4)
    else:
        assert not torch.equal(b, LAB) and set(b.unique().tolist()) <= {0, 1, 2}  # nearest: no new labels
    a2, b2 = augment_3d(_aug(**{key: 1.0}), IMG, LAB, 11)
    assert torch.equal(a, a2) and torch.equal(b, b2)  # seeded per sample


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_augment3d_flip_p1_flips_that_axis_only(axis):
    p = [0.0, 0.0, 0.0]
    p[axis] = 1.0
    a, b = augment_3d(_aug(flip_p=p), IMG, LAB, 11)
    assert torch.equal(a, IMG.flip(axis + 1)) and torch.equal(b, LAB.flip(axis))


def test_augment3d_flips_are_independent_per_axis():
    pipe, n = _aug(flip_p=[0.5, 0.5, 0.5]), 240
    flips = {s: IMG.flip([1 + d for d in s]) if s else IMG for r in range(4) for s in itertools.combinations(range(3), r)}
    counts = dict.fromkeys(flips, 0)
    for j in range(n):
        a, _ = augment_3d(pipe, IMG, LAB, sample_seed(0, 0, j, j))
        counts[next(s for s, f in flips.items() if torch.equal(a, f))] += 1
    # each of the 8 subsets 1/8 when the axes are independent with p = 0.5 (chi-square, 7 dof, p ~ 1e-4)
    chi2 = sum((c - n / 8) ** 2 / (n / 8) for c in counts.values())
    assert chi2 < 27.9, counts


def test_augment3d_in_training_patches(tmp_path):
    _flat_case(tmp_path)
    kw = dict(kind="nifti", root=str(tmp_path), in_channels=1, num_classes=3, split=dict(mode="fixed"),
              nifti=dict(layout="flat", patch_size=[8, 8, 6]))
    off = build_dataset(DataConfig.model_validate({**kw, "augment": dict(enabled=False)}), "train")
    on = build_dataset(DataConfig.model_validate({**kw, "augment": dict(enabled=False), "augment3d": dict(
        enabled=True, rotate_p=1.0)}), "train")
    key = (0, sample_seed(1, 0, 0, 0))
    assert not torch.equal(off[key]["image"], on[key]["image"])
    assert torch.equal(on[key]["image"], on[key]["image"])


# ---------------------------------------------------------------------------- bad input
def test_label_above_num_classes_names_file(tmp_path):
    _flat_case(tmp_path, label_max=5)
    with pytest.raises(DataError, match=r"masks/a\.nii\.gz: label values \[5\] are outside the declared classes 0\.\.2"):
        build_dataset(_cfg(tmp_path), "test")[0]


def test_image_label_shape_mismatch_names_file(tmp_path):
    _flat_case(tmp_path, lab_shape=(10, 8, 5))
    with pytest.raises(DataError, match=r"label .*masks/a\.nii\.gz: spatial shape \(10, 8, 5\) differs"):
        build_dataset(_cfg(tmp_path), "test")[0]


def test_image_label_spacing_mismatch_says_spacing(tmp_path):
    lab_aff = LPS2.copy()
    lab_aff[2, 2] = 2.5
    _flat_case(tmp_path, lab_affine=lab_aff)
    with pytest.raises(DataError, match=r"masks/a\.nii\.gz: voxel spacing \(2\.0, 2\.0, 2\.5\) differs .* by 0\.5 mm"):
        build_dataset(_cfg(tmp_path), "test")[0]


def test_image_label_affine_mismatch_says_affine_and_tolerance(tmp_path):
    lab_aff = LPS2.copy()
    lab_aff[0, 3] += 0.01  # origin 0.01 mm off: beyond the default 1e-3, inside a 0.1 tolerance
    _flat_case(tmp_path, lab_affine=lab_aff)
    with pytest.raises(DataError, match=r"masks/a\.nii\.gz: affine \(origin / axis directions\) differs"):
        build_dataset(_cfg(tmp_path), "test")[0]
    assert build_dataset(_cfg(tmp_path, geometry_tol=0.1), "test")[0]["image"].shape == (1, 10, 8, 6)


def test_volume_smaller_than_patch_is_padded_and_warned_once(tmp_path):
    _flat_case(tmp_path)
    ds = build_dataset(_cfg(tmp_path, patch_size=[16, 8, 8], samples_per_volume=2), "train")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = [ds[(i, sample_seed(0, 0, i, i))] for i in range(2)]
    msgs = [str(w.message) for w in caught if "smaller than" in str(w.message)]
    assert len(msgs) == 1 and "a.nii.gz" in msgs[0] and "(10, 8, 6)" in msgs[0] and "zero-padded" in msgs[0]
    assert all(s["image"].shape == (1, 16, 8, 8) for s in samples)


def test_4d_image_where_3d_expected_names_file(tmp_path):
    _flat_case(tmp_path, img4d=True)
    (tmp_path / "images" / "a.nii.gz").rename(tmp_path / "a4d.nii.gz")
    case = tmp_path / "cf"
    for name in ("t1.nii.gz", "t2.nii.gz"):
        (case / "images" / "a").mkdir(parents=True, exist_ok=True)
        (case / "images" / "a" / name).write_bytes((tmp_path / "a4d.nii.gz").read_bytes())
    (case / "masks" / "a").mkdir(parents=True)
    (case / "masks" / "a" / "l.nii.gz").write_bytes((tmp_path / "masks" / "a.nii.gz").read_bytes())
    cfg = DataConfig.model_validate(dict(kind="nifti", root=str(case), in_channels=2, num_classes=3,
                                         split=dict(mode="fixed"), nifti=dict(layout="case_folders")))
    with pytest.raises(DataError, match=r"images/a/t1\.nii\.gz: image of shape \(10, 8, 6, 2\) is 4-D where a 3-D"):
        build_dataset(cfg, "test")[0]


def test_4d_label_names_file(tmp_path):
    _flat_case(tmp_path)
    _save(np.zeros((10, 8, 6, 2), np.uint8), tmp_path / "masks" / "a.nii.gz")
    with pytest.raises(DataError, match=r"label .*masks/a\.nii\.gz: shape \(10, 8, 6, 2\) is 4-D"):
        build_dataset(_cfg(tmp_path), "test")[0]


# ------------------------------------------------------------------------------ real data
def test_brats_loads_through_pipeline(real_dataset):
    root = real_dataset("brats2015-deepmedic")
    cfg = DataConfig.model_validate(dict(
        kind="nifti", root=str(root), in_channels=2, num_classes=5, split=dict(mode="fixed"),
        nifti=dict(layout="case_folders", channels=["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"],
                   orientation="RAS", target_spacing=[1, 1, 1], patch_size=[32, 32, 32], oversample="classes",
                   fg_oversample=1.0, samples_per_volume=1),
        augment3d=dict(enabled=True)))
    tr = build_dataset(cfg, "train")
    classes = set()
    for j in range(8):
        s = tr[(0, sample_seed(0, 0, 0, j))]
        assert s["image"].shape == (2, 32, 32, 32)
        classes |= set(s["label"].unique().tolist())
    assert classes == {0, 1, 2, 3, 4}  # every class reached by class-balanced patches
    gt, meta = tr.read_original(0)
    assert meta["grid"]["spacing"] == (1.0, 1.0, 1.0) and gt.shape == (240, 240, 155)
    np.testing.assert_array_equal(to_original_grid(tr.volume(0)[1], meta), gt)


def test_totalsegmentator_ct_resamples_and_returns(real_dataset, tmp_path):
    src = real_dataset("totalsegmentator-example-ct")
    for sub, name in (("images", "example_ct_sm.nii.gz"), ("masks", "example_seg.nii.gz")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "ct.nii.gz").symlink_to(src / sub / name)  # pair the two names; nothing copied
    cfg = DataConfig.model_validate(dict(
        kind="nifti", root=str(tmp_path), in_channels=1, num_classes=118, split=dict(mode="fixed"),
        nifti=dict(layout="flat", modality="CT", window=[-1000, 1000], orientation="RAS", target_spacing=[1.5] * 3)))
    ds = build_dataset(cfg, "test")
    s = ds[0]
    gt, meta = ds.read_original(0)
    assert gt.shape == (122, 101, 30) and s["label"].shape == s["image"].shape[1:]
    assert s["meta"]["grid"]["spacing"] == (1.5, 1.5, 1.5)
    assert abs(s["image"].mean().item()) < 0.2  # z-scored per volume (after the window)
    np.testing.assert_array_equal(to_original_grid(s["label"].numpy(), meta), gt)
