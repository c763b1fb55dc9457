"""``medseg predict``: masks (and optional probability maps) for new images or volumes.

2-D images are normalised as in training, resized to the training size, and the logits are resized
back to the original size before the sigmoid/softmax. NIfTI volumes (one file per case, an MSD-style
4-D file, or nnU-Net ``_0000``-style channel files) go through MONAI's sliding-window inference and are
written with the input's affine and header.

Safety rules (see ``docs/reliability.md``):

- the output folder may not be the input folder or lie inside it (symlinks resolved); an input folder
  inside the output folder is allowed, since no prediction can then land on an input file;
- a prediction never replaces an input file, and replaces an existing file only with ``overwrite``;
  every target name is checked before anything is written;
- inputs whose prediction names would collide (``a.jpg`` and ``a.png``) are named after their extension
  (``a_jpg.png``, ``a_png.png``), so no case is dropped;
- an input that cannot be read or predicted does not stop the others: the rest are written, then
  :class:`PredictionError` lists each failure with its reason.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from medseg.config import RunConfig
from medseg.engine.checkpoint import resolve_checkpoint
from medseg.engine.infer import case_logits, labels_from_probabilities
from medseg.engine.runtime import Runtime, make_runtime
from medseg.engine.runtime import progress as progress_bar
from medseg.engine.trainer import model_from_checkpoint
from medseg.errors import DataError, UserError

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VOLUME_EXT = (".nii", ".nii.gz")
CHANNEL_SUFFIX = re.compile(r"_(\d{4})$")
MAX_LISTED = 10  # file names quoted in one error message


class PredictionError(DataError):
    """Some inputs could not be predicted; the others were written (``written``), ``failures`` lists
    ``(input file, reason)`` pairs."""

    def __init__(self, failures: list[tuple[Path, str]], written: list[Path], total: int, output: Path) -> None:
        self.failures = failures
        self.written = written
        lines = [f"  {path}: {reason}" for path, reason in failures[:MAX_LISTED]]
        if len(failures) > MAX_LISTED:
            lines.append(f"  ... and {len(failures) - MAX_LISTED} more")
        super().__init__(f"{len(failures)} of {total} input(s) could not be predicted "
                         f"({len(written)} prediction(s) written to {output}); after fixing them, rerun "
                         "with --overwrite:\n" + "\n".join(lines))


@dataclass(frozen=True)
class Case:
    """One prediction to make: its input file(s) and the base name of its output files."""

    files: tuple[Path, ...]
    name: str

    @property
    def volume(self) -> bool:
        return is_volume(self.files[0])

    def targets(self, out_dir: Path, save_probabilities: bool) -> list[Path]:
        """The files this case writes: the mask, then the probability map when asked."""
        return [out_dir / n for n in target_names(self.name, self.volume, save_probabilities)]


def is_volume(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_EXT)


def stem_of(path: Path) -> str:
    name = path.name
    for ext in VOLUME_EXT + IMAGE_EXT:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def extension_of(path: Path) -> str:
    """``a.nii.gz`` -> ``.nii.gz``; ``a.JPG`` -> ``.JPG`` (case kept)."""
    return path.name[len(stem_of(path)):]


def target_names(name: str, volume: bool, save_probabilities: bool) -> list[str]:
    suffix = ".nii.gz" if volume else ".png"
    return [f"{name}{suffix}"] + ([f"{name}_prob{suffix}"] if save_probabilities else [])


def collect_inputs(source: Path) -> list[list[Path]]:
    """Cases to predict: each a list of files. A 2-D image is a case of its own; NIfTI channel files of
    one case (``x_0000.nii.gz``, ``x_0001.nii.gz``, same extension) form one case."""
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXT + VOLUME_EXT))
    else:
        raise DataError(f"input not found: {source}")
    if not files:
        raise DataError(f"no images (PNG/JPG/BMP/TIFF) or volumes (NIfTI) found in {source}")
    groups: dict[tuple[str, str], list[Path]] = {}
    for f in files:
        stem = stem_of(f)
        if is_volume(f) and CHANNEL_SUFFIX.search(stem):
            key = (CHANNEL_SUFFIX.sub("", stem), extension_of(f).lower())
        else:
            key = (f.name, "")
        groups.setdefault(key, []).append(f)
    return [sorted(g) for _, g in sorted(groups.items())]


def name_cases(groups: Sequence[Sequence[Path]], save_probabilities: bool = False) -> list[Case]:
    """Output base names: the input's stem (channel suffix removed), or ``stem_ext`` when two inputs
    would write the same file (``a.jpg``, ``a.png`` -> ``a_jpg``, ``a_png``); a numeric suffix settles
    any clash that remains (e.g. with another input's ``_prob`` file)."""
    bases = [CHANNEL_SUFFIX.sub("", stem_of(g[0])) if is_volume(g[0]) else stem_of(g[0]) for g in groups]
    masks = Counter(target_names(b, is_volume(g[0]), False)[0] for b, g in zip(bases, groups))
    taken: set[str] = set()
    cases = []
    for base, files in zip(bases, groups):
        volume = is_volume(files[0])
        if masks[target_names(base, volume, False)[0]] > 1:
            base = f"{base}_{extension_of(files[0]).lstrip('.').replace('.', '_')}"
        name, k = base, 2
        while taken.intersection(target_names(name, volume, save_probabilities)):
            name, k = f"{base}_{k}", k + 1
        taken.update(target_names(name, volume, save_probabilities))
        cases.append(Case(tuple(files), name))
    return cases


def check_output_folder(source: Path, output: Path) -> None:
    """Refuse an output folder that is the input folder or lies inside it (symlinks resolved)."""
    src, out = source.resolve(), output.resolve()
    if output.exists() and not output.is_dir():
        raise DataError(f"--output {output} is a file; give a folder for the predictions")
    if source.is_dir() and (out == src or src in out.parents):
        where = "is the input folder" if out == src else "is inside the input folder"
        suggestion = src.parent / f"{src.name}_pred"
        raise DataError(f"--output {output} {where} {source}; predictions would be written among (or over) "
                        f"the input images. Choose a folder outside it, e.g. --output {suggestion}")


def check_targets(cases: Sequence[Case], out_dir: Path, save_probabilities: bool, overwrite: bool) -> None:
    """Before anything is written: no target may be an input file; existing targets need ``overwrite``."""
    inputs = {f.resolve() for case in cases for f in case.files}
    targets = [t for case in cases for t in case.targets(out_dir, save_probabilities)]
    clobbered = [t for t in targets if t.resolve() in inputs]
    if clobbered:
        raise DataError(f"writing to --output {out_dir} would replace the input file(s) {_listing(clobbered)}; "
                        "choose another --output folder")
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not overwrite:
        raise DataError(f"--output {out_dir} already holds {len(existing)} of the {len(targets)} file(s) this would "
                        f"write ({_listing(existing)}); nothing was written. Pass --overwrite to replace them, "
                        "or choose another --output folder")


def _listing(paths: Sequence[Path], limit: int = 5) -> str:
    names = ", ".join(p.name for p in paths[:limit])
    return names + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


# ------------------------------------------------------------------------------ channels
def _example_channels(want: int, got: int) -> str:
    return " ".join(str(i % got) for i in range(want))


def pick_channels(array: np.ndarray, channels: Sequence[int] | None, axis: int, path: Path) -> np.ndarray:
    """Keep the input channels ``channels`` (0-based, in that order, repeats allowed) along ``axis``."""
    if not channels:
        return array
    got = array.shape[axis]
    bad = [c for c in channels if not 0 <= c < got]
    if bad:
        raise DataError(f"{path}: --channels {' '.join(map(str, channels))} asks for channel(s) "
                        f"{', '.join(map(str, bad))} but the input has {got} (0 to {got - 1})")
    return np.take(array, list(channels), axis=axis)


def channel_error(path: Path, want: int, got: int, shape: tuple[int, ...], kind: str) -> DataError:
    """The message for an input whose channel count the model cannot take."""
    if kind == "image":
        auto = ("RGB is converted to grey" if want == 1 else f"grey is repeated to {want} channels") \
            + " automatically, as in training"
        convert = "grey" if want == 1 else "RGB" if want == 3 else f"{want} channels"
        fix = f"or save the image as {convert}"
    else:
        auto = f"a single channel is repeated to {want} automatically, as in training"
        fix = (f"or give {want} channel file(s) per case (name_0000.nii.gz, name_0001.nii.gz, ...) "
               "or one 4-D file with the channels last")
    return DataError(f"{path}: the model expects {want} input channel(s) but the {kind} has {got} "
                     f"(array shape {shape}); {auto}. Choose {want} of its channels with "
                     f"--channels (0-based, e.g. --channels {_example_channels(want, got)}), {fix}")


# ------------------------------------------------------------------------------ one case
def prepare_image(path: Path, cfg: RunConfig, channels: Sequence[int] | None = None
                  ) -> tuple[torch.Tensor, tuple[int, int], tuple | None]:
    """A 2-D image file -> normalised ``1 x C x h x w`` tensor at the training size, its original size, and
    the square padding applied (``data.pad_square``) or None. ``channels`` picks image channels first."""
    from medseg.data.datasets2d import resize_to_input, unit_tensor  # the datasets' own preprocessing
    from medseg.data.io import read_image
    from medseg.data.transforms import normalize_image, square_pad_widths

    array = read_image(path)
    read_shape = tuple(array.shape)
    if array.ndim == 2:
        array = array[..., None]
    array = pick_channels(array, channels, -1, path)
    got, want = array.shape[-1], cfg.data.in_channels
    if got not in (want, 1) and not (got == 3 and want == 1):
        raise channel_error(path, want, got, read_shape, "image")
    if got == 1:
        array = array[..., 0]  # grey as 2-D, the form the datasets' preprocessing takes
    original = tuple(array.shape[:2])
    pad = square_pad_widths(original) if cfg.data.pad_square else None
    image = normalize_image(unit_tensor(resize_to_input(array, cfg.data, pad)).float(), cfg.data.normalize)
    return image[None], original, pad


def prepare_volume(paths: Sequence[Path], cfg: RunConfig, channels: Sequence[int] | None = None) -> torch.Tensor:
    """NIfTI channel files (or one 4-D file, channels last) -> normalised ``1 x C x D x H x W`` tensor, with
    the training's normalisation and channel rule (one channel is repeated to ``data.in_channels``)."""
    from medseg.data.nifti import normalize_volume
    from medseg.data.nifti_io import load_nifti

    arrays = []
    for p in paths:
        arr = load_nifti(p, np.float32)[0]
        if arr.ndim not in (3, 4):
            raise DataError(f"{p}: a NIfTI volume must be 3-D (or 4-D with channels last), got shape {arr.shape}")
        arr = np.moveaxis(arr, -1, 0) if arr.ndim == 4 else arr[None]
        if arrays and arr.shape[1:] != arrays[0].shape[1:]:
            raise DataError(f"{p}: shape {arr.shape[1:]} differs from the case's first channel {paths[0]} "
                            f"({arrays[0].shape[1:]})")
        arrays.append(arr)
    volume = pick_channels(np.concatenate(arrays, 0), channels, 0, paths[0])
    got, want = volume.shape[0], cfg.data.in_channels
    if got not in (want, 1):
        raise channel_error(paths[0], want, got, tuple(volume.shape), "volume")
    volume = normalize_volume(volume, cfg.data.nifti)
    if got != want:
        volume = np.repeat(volume, want, axis=0)
    return torch.from_numpy(np.ascontiguousarray(volume))[None]


def predict_case(model: torch.nn.Module | Sequence[torch.nn.Module], files: Sequence[Path], cfg: RunConfig,
                 rt: Runtime, channels: Sequence[int] | None = None, tta: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(label map, probability map) of one case at its original size. ``model`` may be a list (a fold
    ensemble sharing ``cfg``'s input contract): the mean of their probabilities is thresholded / arg-maxed;
    ``tta="flip"`` averages mirrored passes (:mod:`medseg.engine.ensemble`)."""
    from medseg.engine.ensemble import ensemble_probabilities

    models = list(model) if isinstance(model, (list, tuple)) else [model]
    with torch.no_grad():
        if is_volume(files[0]):
            from medseg.data.resample import network_grid_volume, to_original_grid

            volume = prepare_volume(files, cfg, channels)  # then nifti.orientation / target_spacing, and back
            image, grid = network_grid_volume(volume, files[0], cfg.data.nifti.orientation, cfg.data.nifti.target_spacing)
            finish = lambda logits: to_original_grid(logits, grid)  # noqa: E731
        else:
            from medseg.data.transforms import to_original_size

            if any(int(getattr(m, "spatial_dims", 2)) == 3 for m in models):
                raise DataError(f"{files[0]}: the model is 3-D (trained on volumes) and cannot predict a 2-D "
                                "image; give NIfTI volumes (.nii / .nii.gz)")
            image, original, pad = prepare_image(files[0], cfg, channels)
            finish = lambda logits: to_original_size(logits, original, pad)  # noqa: E731
        prob = ensemble_probabilities(models, image, lambda m, x, **kw: case_logits(m, x, cfg, rt, **kw), finish,
                                      tta, cfg)
    if cfg.data.nifti.regions:  # sigmoid WT / TC / ET: nested masks -> a BraTS label map (ET 4); fg = P(WT)
        from medseg.regions import region_outputs

        _, labels = region_outputs(prob[0].cpu().numpy(), cfg.eval.threshold, cfg.data.nifti.regions)
        return labels.astype(np.uint8), prob[0, 0].cpu().numpy()
    labels = labels_from_probabilities(prob, cfg.eval.threshold)[0].cpu().numpy()
    fg = prob[0, 0] if prob.shape[1] == 1 else 1 - prob[0, 0]
    return labels.astype(np.uint8), fg.cpu().numpy()


# ------------------------------------------------------------------------------ a folder
def plan_predictions(source: str | Path, output: str | Path, *, save_probabilities: bool = False,
                     overwrite: bool = False) -> list[Case]:
    """The cases to predict with their output names, after every safety check (nothing is written)."""
    source, out_dir = Path(source), Path(output)
    check_output_folder(source, out_dir)
    cases = name_cases(collect_inputs(source), save_probabilities)
    check_targets(cases, out_dir, save_probabilities, overwrite)
    return cases


def predict_paths(checkpoint: str | Path | None, source: str | Path, output: str | Path, *,
                  save_probabilities: bool = False, progress: bool = True, overwrite: bool = False,
                  channels: Sequence[int] | None = None,
                  echo: Callable[[str], None] | None = print, engine: str = "torch",
                  run: str | Path | None = None, tta: str | None = None) -> list[Path]:
    """Predict every image/volume in ``source`` into ``output``; returns the written mask files.

    Raises :class:`DataError` before writing anything when the output folder is unsafe or already holds
    a target file (unless ``overwrite``), and :class:`PredictionError` after writing the rest when some
    inputs could not be read or predicted. ``channels`` picks input channels (0-based); checkpoints load
    weights-only.
    ``echo`` receives notes (renamed outputs); None silences them. ``engine="onnxruntime"``: ``checkpoint``
    is an ONNX export folder, run with onnxruntime through the same pre- and post-processing.
    ``run``: a `medseg cv` folder instead of ``checkpoint``: the fold ensemble (mean probability of every
    fold's ``best.pt``); ``tta="flip"``: flip test-time augmentation (both: ``docs/ensemble.md``).
    """
    from medseg.data.io import write_prediction

    cases = plan_predictions(source, output, save_probabilities=save_probabilities, overwrite=overwrite)
    renamed = [c for c in cases if c.name != _default_name(c)]
    if renamed and echo is not None:
        echo("note: some inputs share a name; their predictions are named apart: "
             + ", ".join(f"{c.files[0].name} -> {c.targets(Path(), False)[0].name}" for c in renamed))
    models, cfg = load_predictor(checkpoint, engine=engine, run=run)
    if cfg.data.nifti.regions and echo is not None:  # 3 sigmoid region outputs (docs/cwcd.md)
        echo(region_note(cfg.data.nifti.regions))
    rt = make_runtime(cfg.train, 2)
    models = [m.to(rt.device) for m in models]
    out_dir = Path(output)
    written: list[Path] = []
    failures: list[tuple[Path, str]] = []
    for case in progress_bar(cases, desc="predict", unit="case", disable=not progress):
        mask_path, *prob_path = case.targets(out_dir, save_probabilities)
        reference = case.files[0] if case.volume else None
        try:
            labels, fg = predict_case(models, case.files, cfg, rt, channels, tta)
            written.append(write_prediction(labels, mask_path, reference=reference))
            if prob_path:
                write_prediction(fg.astype(np.float32), prob_path[0], reference=reference)
        except (UserError, OSError, ValueError) as err:  # unreadable / incompatible input, failed write
            failures.append((case.files[0], _reason(err, case.files[0])))
    if failures:
        raise PredictionError(failures, written, len(cases), out_dir)
    return written


def region_note(scheme: str) -> str:
    """What a region model's saved label map holds (the regions are nested; ``brats2015``'s two core labels
    cannot be told apart from them)."""
    core = ("1 = tumour core outside ET (necrosis and non-enhancing tumour, labels 1 and 3 of brats2015, cannot "
            "be separated from regions)" if scheme == "brats2015" else "1 = tumour core outside ET")
    return (f"note: region model (data.nifti.regions: {scheme}): each voxel is WT / TC / ET by sigmoid >= "
            f"eval.threshold, saved as a label map: 4 = enhancing tumour (ET), {core}, 2 = oedema (WT outside "
            "TC); --probabilities writes P(WT)")


def load_predictor(checkpoint: str | Path | None, *, engine: str = "torch", run: str | Path | None = None
                   ) -> tuple[list[torch.nn.Module], RunConfig]:
    """The model(s) to predict with and the config they share: a checkpoint (file or run folder), an ONNX
    export folder (``engine="onnxruntime"``), or every fold of a `medseg cv` folder (``run``)."""
    if run is not None:
        if checkpoint is not None or engine != "torch":
            raise UserError("--run CV_DIR (a fold ensemble) replaces --checkpoint / --model; give one of them")
        from medseg.engine.ensemble import load_fold_ensemble

        models, cfg, _ = load_fold_ensemble(run)
        return models, cfg
    if engine == "onnxruntime":  # ``checkpoint`` is a `medseg export --format onnx` folder (docs/export.md)
        from medseg.engine.export import load_exported

        model, cfg = load_exported(checkpoint)
        return [model], cfg
    model, cfg = model_from_checkpoint(resolve_checkpoint(checkpoint))
    return [model], cfg


def _default_name(case: Case) -> str:
    f = case.files[0]
    return CHANNEL_SUFFIX.sub("", stem_of(f)) if is_volume(f) else stem_of(f)


def _reason(err: Exception, path: Path) -> str:
    """The error text without repeating the file name (the failure list starts with it)."""
    text = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
    text = text[len(f"{path}: "):] if text.startswith(f"{path}: ") else text
    return text.replace(f" {path}", "")
