"""``medseg c2f predict``: Algorithm 1 (coarse pass, fine rounds, view fusion) over a folder of CT volumes.

The run folder is the one ``medseg c2f train`` wrote (``<output>/<name>/``, one sub-folder per view), or
a single view's folder. Each view's networks come from its ``checkpoints/best.pt`` (``last.pt`` when there
is no best), loaded with ``weights_only`` (:func:`medseg.engine.checkpoint.load_checkpoint`); a checkpoint
of another view, of other networks, or of a plain ``medseg train`` run is refused, naming the file.

Output safety is ``medseg predict``'s (:func:`medseg.engine.predict.plan_predictions`): the output may not
be the input folder or inside it, and no existing file is replaced without ``overwrite``; each mask is
written to a temporary file and renamed, so a crash leaves no half-written NIfTI. Masks are uint8 NIfTI
with the input's affine and header (spacing). ``c2f_cases.csv`` beside them holds, per case, the rounds
run, the seconds taken and whether the coarse pass was empty (such a case is also reported on screen:
its prediction is empty).
"""
from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from medseg.data.views import VIEWS, read_spacing, view_axis, window_scale
from medseg.engine import checkpoint as ckpt
from medseg.engine.c2f import segment_volume
from medseg.engine.c2f_train import C2FRecipe, Nets, build_nets, check_checkpoint, validate_recipe
from medseg.engine.predict import PredictionError, plan_predictions
from medseg.engine.runtime import pick_device
from medseg.errors import CheckpointError, DataError, UserError

CASES_CSV = "c2f_cases.csv"
EVAL_CSV = "eval_cases.csv"
EVAL_FIELDS = ["case", "dice", "hd95_mm", "rounds", "seconds", "empty_coarse", "last_rdsc", "gt_voxels",
               "pred_voxels", "spacing_mm", "shape"]


def _view_folders(run: Path, views: Sequence[str] | None) -> list[tuple[str, Path, dict[str, Any] | None]]:
    """``(view, folder, state)`` to load: the run's view sub-folders, or the run itself when it is one view
    (``state`` is then its checkpoint, already read to learn the view; None otherwise)."""
    if not run.is_dir():
        raise CheckpointError(f"--run {run}: no such folder (give the folder `medseg c2f train` wrote)")
    if (run / "checkpoints").is_dir():  # a single view's folder: its checkpoint says which view
        state = ckpt.load_checkpoint(ckpt.resolve_checkpoint(run, "best"))
        check_checkpoint(state, str(run), None)
        own = str(state["view"])
        for v in views or []:
            if v != own:
                raise CheckpointError(f"--run {run} was trained for the {own} view, not {v}; give the run's parent "
                                      f"folder or train it: medseg c2f train RECIPE --view {v}")
        return [(own, run, state)]
    found = [(v, run / v, None) for v in VIEWS if (run / v / "checkpoints").is_dir()]
    if views:
        missing = [v for v in views if not (run / v / "checkpoints").is_dir()]
        if missing:
            raise CheckpointError(f"--run {run} has no trained {', '.join(missing)} view (no {run / missing[0]}/"
                                  f"checkpoints); train it: medseg c2f train RECIPE --view {missing[0]}")
        found = [(v, run / v, None) for v in views]
    if not found:
        raise CheckpointError(f"--run {run} holds no coarse-to-fine run (no <view>/checkpoints/ folder); give the "
                              "folder `medseg c2f train` wrote, e.g. runs/mll_phantom")
    return found


def load_run(run: str | Path, views: Sequence[str] | None = None,
             device: torch.device | str = "cpu") -> tuple[dict[str, Nets], C2FRecipe]:
    """Each view's networks (eval mode) and the recipe of the run; all views must share window and networks."""
    nets: dict[str, Nets] = {}
    recipe: C2FRecipe | None = None
    for view, folder, state in _view_folders(Path(run), views):
        path = ckpt.resolve_checkpoint(folder, "best")
        if state is None:
            state = ckpt.load_checkpoint(path)
        check_checkpoint(state, str(path), view)
        r = validate_recipe(ckpt.checkpoint_config(state, path), str(path))
        check_checkpoint(state, str(path), view, r)
        if recipe is not None and (tuple(r.data.window) != tuple(recipe.data.window)
                                   or (r.coarse, r.fine) != (recipe.coarse, recipe.fine)):
            raise CheckpointError(f"{path}: its HU window or networks differ from the run's other views; all views "
                                  "of one prediction must come from the same recipe")
        recipe = recipe or r
        n = build_nets(r, device)
        n.load_state_dict(state["model"], str(path))
        n.set_epoch(max(int(state["epoch"]) - 1, 0))  # the state of the last epoch trained (MLN's branches)
        n.train(False)
        nets[view] = n
    assert recipe is not None
    return nets, recipe


def predict_folder(run: str | Path, source: str | Path, output: str | Path, *, views: Sequence[str] | None = None,
                   overwrite: bool = False, device: str = "auto", max_rounds: int = 10,
                   echo: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Segment every CT volume of ``source`` into ``output``; returns the per-case rows of ``c2f_cases.csv``.

    Every check (output folder, existing targets, the run's checkpoints) happens before anything is
    written. A case that fails does not stop the others; :class:`PredictionError` lists the failures after.
    """
    out_dir = Path(output)
    cases = plan_predictions(source, out_dir, overwrite=overwrite)
    if any(not c.volume for c in cases):
        raise DataError(f"{source}: coarse-to-fine prediction needs NIfTI CT volumes; found 2-D images "
                        f"({cases[0].files[0].name}, ...)")
    table = out_dir / CASES_CSV
    if table.exists() and not overwrite:
        raise DataError(f"--output {out_dir} already holds {CASES_CSV}; nothing was written. Pass --overwrite or "
                        "choose another --output folder")
    dev = pick_device(device)
    nets, recipe = load_run(run, views, dev)
    if recipe.data.downsample != 1 or recipe.data.crop_foreground:
        raise DataError(f"--run {run} was trained on volumes changed by data.downsample / data.crop_foreground; "
                        "`medseg c2f predict` reads volumes as they are. Score the run's held-out volumes with "
                        f"`medseg c2f evaluate --run {run}` instead")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    failures: list[tuple[Path, str]] = []
    written: list[Path] = []
    for case in cases:
        try:
            row = _predict_case(case.files[0], case.targets(out_dir, False)[0], nets, recipe, dev, max_rounds)
        except (UserError, OSError, ValueError) as err:
            failures.append((case.files[0], str(err)))
            continue
        rows.append({"case": case.name, **row})
        written.append(case.targets(out_dir, False)[0])
        if row["empty_coarse"] and echo is not None:
            echo(f"warning: {case.files[0]}: the coarse pass found no target in any view; the prediction is empty "
                 "(no fine round ran)")
    ckpt.atomic_write_text(_csv(rows), table)
    if failures:
        raise PredictionError(failures, written, len(cases), out_dir)
    return rows


def _predict_case(path: Path, target: Path, nets: dict[str, Nets], recipe: C2FRecipe, device: torch.device,
                  max_rounds: int) -> dict[str, Any]:
    from medseg.data.nifti_io import load_nifti, save_nifti

    t0 = time.perf_counter()
    read_spacing(path)  # a header without spacing is refused (HD95 in mm depends on it)
    array, _, affine, header = load_nifti(path, np.float32)
    if array.ndim != 3:
        raise DataError(f"{path}: expected a 3-D CT volume, got shape {array.shape}")
    volume = window_scale(array, recipe.data.window)
    models = [n.view_models(view_axis(v, affine)) for v, n in nets.items()]
    result, _ = segment_volume(volume, models, max_rounds=max_rounds, margin=recipe.train.margin, device=device)
    tmp = target.parent / f".{target.name}.partial.nii.gz"
    try:
        save_nifti(result.mask.astype(np.uint8), tmp, affine, header)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return {"rounds": result.rounds, "seconds": round(time.perf_counter() - t0, 3),
            "empty_coarse": int(result.empty_coarse), "last_rdsc": result.rdscs[-1] if result.rdscs else ""}


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["case", "rounds", "seconds", "empty_coarse", "last_rdsc"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def evaluate_run(run: str | Path, output: str | Path | None = None, *, views: Sequence[str] | None = None,
                 overwrite: bool = False, device: str = "auto", max_rounds: int = 10,
                 echo: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Algorithm 1 on the held-out volumes of a run's own recipe (its ``data.split`` validation cases, read
    with its ``data`` options: layout, label values, window, downsampling, crop), scored per volume.

    Writes ``output`` (default ``<run>/eval_cases.csv``; an existing file only with ``overwrite``) with, per
    case, the DSC, the HD95 in mm (:func:`medseg.metrics.hd95`, medpy's pooled definition, at the spacing of
    the volumes the run saw, i.e. the downsampled spacing when ``data.downsample > 1``; an empty prediction
    gets the policy's worst value), the fine rounds run, the seconds, whether the coarse pass was empty, the
    last round's RDSC, the voxel counts, the spacing and the shape. Returns the rows.
    """
    from medseg.engine.c2f_train import dataset_cases, ensure_data, recipe_volumes, split_cases
    from medseg.metrics import dice, hd95

    target = Path(output) if output is not None else Path(run) / EVAL_CSV
    if target.exists() and not overwrite:
        raise DataError(f"{target} already exists; nothing was written. Pass --overwrite or choose another --output")
    dev = pick_device(device)
    nets, recipe = load_run(run, views, dev)
    cases = dataset_cases(ensure_data(recipe.data), recipe.data.files)
    _, held_out = split_cases(list(cases), recipe.data.split)
    rows: list[dict[str, Any]] = []
    for case in held_out:
        vol = recipe_volumes(recipe.data, cases, [case], next(iter(nets)))[0]
        models = [n.view_models(view_axis(v, vol.affine)) for v, n in nets.items()]
        t0 = time.perf_counter()
        result, _ = segment_volume(vol.image, models, max_rounds=max_rounds, margin=recipe.train.margin, device=dev)
        seconds = time.perf_counter() - t0
        rows.append({"case": case, "dice": dice(result.mask, vol.label),
                     "hd95_mm": hd95(result.mask, vol.label, spacing=vol.spacing), "rounds": result.rounds,
                     "seconds": round(seconds, 3), "empty_coarse": int(result.empty_coarse),
                     "last_rdsc": result.rdscs[-1] if result.rdscs else "", "gt_voxels": int(vol.label.sum()),
                     "pred_voxels": int(result.mask.sum()), "spacing_mm": "x".join(f"{x:g}" for x in vol.spacing),
                     "shape": "x".join(str(x) for x in vol.image.shape)})
        if echo is not None:
            r = rows[-1]
            echo(f"{case}: DSC {r['dice']:.4f} HD95 {r['hd95_mm']:.2f} mm rounds {r['rounds']} ({seconds:.1f} s)")
    target.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EVAL_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    ckpt.atomic_write_text(buf.getvalue(), target)
    return rows
