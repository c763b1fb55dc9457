"""Image/mask/NIfTI readers and writers against independently written files (PIL, tifffile, nibabel)."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from medseg.data import load_nifti, read_image, read_mask, save_nifti, write_prediction
from medseg.errors import DataError

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("ext", ["png", "bmp", "tif"])
def test_lossless_formats_round_trip_grey_and_rgb(tmp_path, ext):
    grey = RNG.integers(0, 256, (9, 7), dtype=np.uint8)
    rgb = RNG.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    for name, arr in (("g", grey), ("c", rgb)):
        Image.fromarray(arr).save(tmp_path / f"{name}.{ext}")
        np.testing.assert_array_equal(read_image(tmp_path / f"{name}.{ext}"), arr)


def test_jpeg_is_read_close_to_source(tmp_path):
    arr = np.full((16, 16, 3), 120, dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (16, 16, 3) and np.abs(out.astype(int) - 120).max() <= 2


def test_rgb_tiffs_that_pillow_cannot_read_faithfully(tmp_path):
    arr16 = RNG.integers(0, 65535, (6, 5, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "x.tiff", arr16)
    assert np.array(Image.open(tmp_path / "x.tiff")).dtype == np.uint8  # Pillow drops to 8 bits
    np.testing.assert_array_equal(read_image(tmp_path / "x.tiff"), arr16)
    arrf = RNG.random((6, 5, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", arrf)
    with pytest.raises(Exception):
        Image.open(tmp_path / "f.tif").load()  # Pillow cannot open float RGB at all
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif"), arrf)


def test_planar_rgb_tiff_is_channels_last(tmp_path):
    arr = RNG.integers(0, 255, (3, 6, 5), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "p.tif", arr, planarconfig="separate", photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "p.tif"), np.moveaxis(arr, 0, -1))


def test_mask_threshold_default_and_configurable(tmp_path):
    arr = np.array([[0, 30, 127, 128], [200, 225, 255, 100]], dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "m.png")
    with pytest.raises(DataError, match=r"m\.png.*not binary"):  # grey values: no threshold is guessed
        read_mask(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", threshold=127), (arr > 127).astype(np.uint8))
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", threshold=50), (arr > 50).astype(np.uint8))


def test_one_bit_and_zero_one_masks_are_kept(tmp_path):
    arr = RNG.random((8, 8)) > 0.5
    Image.fromarray(arr).convert("1").save(tmp_path / "b.png")
    Image.fromarray(arr.astype(np.uint8)).save(tmp_path / "z.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png"), arr.astype(np.uint8))
    np.testing.assert_array_equal(read_mask(tmp_path / "z.png"), arr.astype(np.uint8))


def test_palette_png_gives_indices(tmp_path):
    idx = RNG.integers(0, 3, (10, 10), dtype=np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.save(tmp_path / "p.png")
    out = read_mask(tmp_path / "p.png", threshold=None, num_classes=3)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, idx)
    with pytest.raises(DataError, match="outside the declared classes"):
        read_mask(tmp_path / "p.png", threshold=None, num_classes=2)


def test_missing_and_truncated_images_raise_dataerror(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "nope.png")
    Image.fromarray(RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="t.png"):
        read_image(tmp_path / "t.png")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="junk.jpg"):
        read_image(tmp_path / "junk.jpg")


def test_write_prediction_png_binary_labels_and_probability(tmp_path):
    pred = (RNG.random((7, 9)) > 0.5).astype(np.uint8)
    write_prediction(pred, tmp_path / "a" / "p.png")
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "a" / "p.png")), pred * 255)
    labels = RNG.integers(0, 5, (7, 9))
    write_prediction(labels, tmp_path / "l.png")
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "l.png")), labels)
    prob = RNG.random((7, 9)).astype(np.float32)
    write_prediction(prob, tmp_path / "f.png")
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "f.png")), np.round(prob * 255).astype(np.uint8))


def _affine() -> np.ndarray:
    aff = np.diag([0.8, 1.25, 3.0, 1.0])
    aff[:3, 3] = [-10.0, 20.5, 7.0]
    aff[0, 1] = 0.0
    return aff


def test_nifti_round_trip_keeps_affine_spacing_and_values(tmp_path):
    vol = RNG.normal(size=(5, 6, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, _affine()), tmp_path / "in.nii.gz")
    arr, spacing, affine, header = load_nifti(tmp_path / "in.nii.gz")
    np.testing.assert_allclose(spacing, (0.8, 1.25, 3.0))
    np.testing.assert_allclose(affine, _affine())
    np.testing.assert_array_equal(arr, vol)
    mask = (vol > 0).astype(np.uint8)
    save_nifti(mask, tmp_path / "out.nii.gz", affine, header)
    back = nib.load(tmp_path / "out.nii.gz")  # independent reader
    np.testing.assert_allclose(back.affine, _affine(), atol=1e-6)
    np.testing.assert_allclose(back.header.get_zooms(), (0.8, 1.25, 3.0), atol=1e-6)
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), mask)


def test_write_prediction_volume_uses_reference_geometry(tmp_path):
    vol = RNG.normal(size=(4, 4, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, _affine()), tmp_path / "ref.nii.gz")
    labels = RNG.integers(0, 3, (4, 4, 3))
    write_prediction(labels, tmp_path / "pred.nii.gz", reference=tmp_path / "ref.nii.gz")
    back = nib.load(tmp_path / "pred.nii.gz")
    np.testing.assert_allclose(back.affine, _affine(), atol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), labels)


def test_truncated_nifti_raises_dataerror(tmp_path):
    nib.save(nib.Nifti1Image(RNG.normal(size=(20, 20, 20)).astype(np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    data = (tmp_path / "v.nii.gz").read_bytes()
    (tmp_path / "v.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="v.nii.gz"):
        load_nifti(tmp_path / "v.nii.gz")
