"""A seeded synthetic abdominal CT phantom, written as a NIfTI dataset in the nnU-Net / MSD layout.

So that the coarse-to-fine pipeline (``docs/mll.md``) runs with no download, :func:`make_phantom` draws one
volume (values in HU) and its label, and :func:`write_phantom_dataset` writes ``n`` of them as::

    <folder>/dataset.json
    <folder>/imagesTr/phantom_000_0000.nii.gz   (int16 HU)
    <folder>/labelsTr/phantom_000.nii.gz        (uint8: 0 background, 1 target)

Anatomy (RAS+ world coordinates in mm, the volume centred on the origin, a diagonal affine: array axis 0 runs
towards the patient's right, axis 1 towards anterior, axis 2 towards superior, so axial slices run along
axis 2):

- air -1000 HU outside an elliptic-cylinder body; a subcutaneous fat ring -100 HU; soft tissue 40 HU;
- liver 60 HU (right), spleen 50 HU (left, posterior), two kidneys 30 HU (posterior) as ellipsoids, aorta
  180 HU and a vertebral body 500 HU (posterior) as cylinders along z;
- the **target**: a curved tube like a pancreas, ``target_hu`` = 100 HU by default (enhancing parenchyma in a
  pancreatic-phase scan: 60 HU above the soft tissue around it, four times the noise), of centre-line length
  ``target_length`` mm and radius ``target_radius`` mm, lying across the middle of the axial plane in front
  of the aorta, with a slight tilt in z. It used to be 45 HU, 5 HU above the tissue and a third of the
  noise: invisible voxel by voxel, so that no network could learn it from a few volumes (the phantom
  recipe's validation DSC stayed 0). ``target_hu`` lowers it again for a harder phantom;
- Gaussian noise of ``noise`` HU; anisotropic spacing (default 1.5 x 1.5 x 3 mm).

Everything is a pure function of ``seed`` and the arguments; files are written with a fixed gzip header, so
the same seed gives the same bytes.
"""
from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medseg.errors import DataError

HU = {"air": -1000.0, "fat": -100.0, "tissue": 40.0, "liver": 60.0, "spleen": 50.0, "kidney": 30.0,
      "aorta": 180.0, "bone": 500.0, "target": 100.0}


@dataclass(frozen=True)
class PhantomSpec:
    """Size and geometry of one phantom volume."""

    shape: tuple[int, int, int] = (96, 80, 32)
    spacing: tuple[float, float, float] = (1.5, 1.5, 3.0)
    target_length: float = 60.0  # mm, along the centre line
    target_radius: float = 6.0  # mm
    noise: float = 15.0  # HU
    target_hu: float = HU["target"]


def _world_grid(spec: PhantomSpec) -> list[np.ndarray]:
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2) * s for n, s in zip(spec.shape, spec.spacing)]
    return np.meshgrid(*axes, indexing="ij")


def _ellipsoid(grid: list[np.ndarray], centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def _tube(grid: list[np.ndarray], points: np.ndarray, radius: float) -> np.ndarray:
    """Voxels within ``radius`` of the polyline through ``points`` (``m x 3``), by closest segment point."""
    near = np.ones(grid[0].shape, dtype=bool)  # only voxels in the curve's bounding box (+ radius) are tested
    for d, g in enumerate(grid):
        near &= (g >= points[:, d].min() - radius) & (g <= points[:, d].max() + radius)
    vox = np.stack([g[near] for g in grid], axis=1)
    best = np.full(vox.shape[0], np.inf, dtype=np.float32)
    for a, b in zip(points[:-1], points[1:]):
        ab = b - a
        t = np.clip((vox - a) @ ab / float(ab @ ab), 0.0, 1.0)
        best = np.minimum(best, np.sum((vox - (a + t[:, None] * ab)) ** 2, axis=1))
    out = np.zeros(grid[0].shape, dtype=bool)
    out[near] = best <= radius**2
    return out


def target_centreline(spec: PhantomSpec, rng: np.random.Generator, samples: int = 41) -> np.ndarray:
    """Points (mm) of the target's centre line, of arc length ``spec.target_length``: a gentle arc mostly
    along x with a small tilt in z, near the centre of the body, in front of the aorta."""
    t = np.linspace(-0.5, 0.5, samples)
    bend = rng.uniform(0.15, 0.25) * spec.target_length
    curve = np.stack([t * spec.target_length, bend * (t**2 - 1 / 12) * 2,
                      rng.uniform(-0.1, 0.1) * spec.target_length * t], axis=1)
    arc = np.sum(np.linalg.norm(np.diff(curve, axis=0), axis=1))
    curve *= spec.target_length / arc  # exact arc length
    offset = np.array([rng.uniform(-8, 8), rng.uniform(-4, 4), rng.uniform(-3, 3)])
    return (curve + offset).astype(np.float32)


def make_phantom(seed: int, spec: PhantomSpec = PhantomSpec()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image_hu float32, label uint8, affine)`` of one phantom (see the module docstring)."""
    rng = np.random.default_rng(seed)
    grid = _world_grid(spec)
    ext = [(n - 1) / 2 * s for n, s in zip(spec.shape, spec.spacing)]
    body_r = np.array([0.9 * ext[0], 0.85 * ext[1]]) * rng.uniform(0.92, 1.0, 2)
    body = (grid[0] / body_r[0]) ** 2 + (grid[1] / body_r[1]) ** 2
    image = np.full(spec.shape, HU["air"], dtype=np.float32)
    image[body <= 1.0] = HU["fat"]
    image[body <= 0.8] = HU["tissue"]
    j = lambda scale: rng.uniform(1 - scale, 1 + scale)  # noqa: E731 - per-organ size jitter
    bx, by, ez = body_r[0], body_r[1], ext[2]
    organs = [  # (name, centre mm, radii mm), RAS+
        ("liver", (0.45 * bx, 0.1 * by, 0.0), (0.35 * bx * j(0.1), 0.45 * by, 1.2 * ez)),
        ("spleen", (-0.55 * bx, -0.25 * by, 0.1 * ez), (0.14 * bx * j(0.1), 0.22 * by, 0.6 * ez)),
        ("kidney", (0.3 * bx, -0.45 * by, -0.2 * ez), (0.1 * bx, 0.16 * by * j(0.1), 0.5 * ez)),
        ("kidney", (-0.3 * bx, -0.45 * by, -0.2 * ez), (0.1 * bx, 0.16 * by * j(0.1), 0.5 * ez)),
        ("aorta", (-0.05 * bx, -0.3 * by, 0.0), (9.0, 9.0, 10 * ez)),
        ("bone", (0.0, -0.65 * by, 0.0), (15.0, 13.0, 10 * ez)),
    ]
    for name, centre, radii in organs:
        image[_ellipsoid(grid, centre, radii)] = HU[name]
    target = _tube(grid, target_centreline(spec, rng), spec.target_radius)
    image[target] = spec.target_hu
    image += rng.normal(0.0, spec.noise, spec.shape).astype(np.float32)
    affine = np.diag([*spec.spacing, 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(spec.shape, spec.spacing)]
    return image, target.astype(np.uint8), affine


def _write_nii_gz(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """NIfTI-1 with qform/sform = ``affine``, gzip with mtime 0 (reproducible bytes)."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))


def phantom_record(seed: int, spec: PhantomSpec) -> dict:
    """What ``dataset.json`` records of the phantom (seed and spec), to recognise a dataset written with
    other settings (e.g. by an older medseg whose target was invisible)."""
    return {"seed": int(seed), **{k: (list(v) if isinstance(v, tuple) else float(v))
                                   for k, v in asdict(spec).items()}}


def write_phantom_dataset(folder: str | Path, n: int = 4, seed: int = 0, spec: PhantomSpec = PhantomSpec(),
                          overwrite: bool = False) -> list[str]:
    """Write ``n`` phantoms (case ``i`` uses seed ``seed + i``) in the nnU-Net layout; returns the case ids.

    An existing ``imagesTr``/``labelsTr`` with files is kept unless ``overwrite`` (a :class:`DataError`).
    """
    folder = Path(folder)
    img_dir, lab_dir = folder / "imagesTr", folder / "labelsTr"
    if not overwrite and any(d.is_dir() and any(d.iterdir()) for d in (img_dir, lab_dir)):
        raise DataError(f"{folder} already holds a dataset (imagesTr/ or labelsTr/ not empty); choose an empty "
                        "folder or pass overwrite=True")
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    ids = [f"phantom_{i:03d}" for i in range(n)]
    for i, case in enumerate(ids):
        image, label, affine = make_phantom(seed + i, spec)
        _write_nii_gz(np.rint(image).astype(np.int16), affine, img_dir / f"{case}_0000.nii.gz")
        _write_nii_gz(label, affine, lab_dir / f"{case}.nii.gz")
    info = {"name": "phantom", "description": f"medseg synthetic CT phantom, seed {seed}",
            "channel_names": {"0": "CT"}, "labels": {"background": 0, "target": 1},
            "numTraining": n, "file_ending": ".nii.gz",
            "spacing": list(spec.spacing), "target_hu": spec.target_hu, "phantom": phantom_record(seed, spec)}
    (folder / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    return ids
