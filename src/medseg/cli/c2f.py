"""``medseg c2f train`` and ``medseg c2f predict``: the coarse-to-fine (MLL/MLN) pipeline (``docs/mll.md``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from medseg.cli import add_command

VIEW_CHOICES = ["axial", "coronal", "sagittal", "all"]


def register(sub: argparse._SubParsersAction) -> None:
    group = add_command(sub, "c2f", "coarse-to-fine small-organ segmentation of CT volumes (MLL/MLN, RSTN): "
                        "train per view, predict with Algorithm 1",
                        "medseg c2f train mll/phantom --output runs")
    c2f_sub = group.add_subparsers(dest="c2f_command", metavar="SUBCOMMAND")
    group.set_defaults(func=lambda args: (group.print_help(), 2)[1])

    t = add_command(c2f_sub, "train", "train the coarse and fine networks of each view (RSTN stages, MLL schedules, "
                    "early stopping on validation DSC)", "medseg c2f train mll/phantom --output runs")
    t.add_argument("recipe", help="recipe YAML, or a bundled one: mll/phantom, mll/nih_pancreas_mll, ... "
                   "(src/medseg/recipes/mll/)")
    t.add_argument("--view", choices=VIEW_CHOICES, default=None,
                   help="train one view, or all three (default: the recipe's data.views)")
    t.add_argument("--output", help="runs folder (default: the recipe's output_dir); the run is <output>/<name>/<view>")
    t.add_argument("--resume", action="store_true", help="continue each view from its checkpoints/last.pt")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name and view")
    t.add_argument("--force", action="store_true", help="with --resume: accept a recipe that differs from the run's")
    t.set_defaults(func=_train)

    p = add_command(c2f_sub, "predict", "segment every CT volume of a folder with a trained run (NIfTI masks with "
                    "the input's affine and spacing; rounds and seconds per case in c2f_cases.csv)",
                    "medseg c2f predict --run runs/mll_phantom --input runs/data/phantom_v2/imagesTr "
                    "--output runs/mll_phantom/predictions")
    p.add_argument("--input", required=True, help="folder (or file) of NIfTI CT volumes")
    p.add_argument("--output", required=True, help="folder for the masks (not the input folder)")
    _add_run_options(p, "replace existing predictions")
    p.set_defaults(func=_predict)

    e = add_command(c2f_sub, "evaluate", "run Algorithm 1 on the held-out volumes of a run's recipe (its split and "
                    "data options) and write per-volume DSC, HD95 (mm) and rounds to a CSV",
                    "medseg c2f evaluate --run runs/mll_phantom")
    e.add_argument("--output", help="CSV to write (default <run>/eval_cases.csv)")
    _add_run_options(e, "replace an existing CSV")
    e.set_defaults(func=_evaluate)


def _add_run_options(parser: argparse.ArgumentParser, overwrite_help: str) -> None:
    """The options `c2f predict` and `c2f evaluate` share: the run, its views, Algorithm 1's round limit."""
    parser.add_argument("--run", required=True,
                        help="the folder `medseg c2f train` wrote (<output>/<name>), or one view's")
    parser.add_argument("--view", choices=VIEW_CHOICES, default="all",
                        help="views to fuse (default all: every view the run has)")
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)
    parser.add_argument("--max-rounds", type=int, default=10, help="fine rounds at most (default 10)")
    parser.add_argument("--device", default="auto")


def recipe_path(name: str) -> Path:
    """A recipe file, or a bundled recipe (``mll/phantom``, ``phantom``) under ``medseg/recipes/``."""
    path = Path(name)
    if path.is_file():
        return path
    bundled = Path(__file__).resolve().parents[1] / "recipes"
    for candidate in (bundled / name, bundled / f"{name}.yaml", bundled / "mll" / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    return path  # load_recipe names it as not found


def _train(args: argparse.Namespace) -> int:
    from medseg.engine.c2f_train import load_recipe, train_recipe

    recipe = load_recipe(recipe_path(args.recipe))
    views = None if args.view is None else (["axial", "coronal", "sagittal"] if args.view == "all" else [args.view])
    results = train_recipe(recipe, views, args.output, resume=args.resume, overwrite=args.overwrite, force=args.force)
    for r in results:
        best = "none" if r["best_dice"] is None else f"{r['best_dice']:.4f} (epoch {r['best_epoch']})"
        print(f"{r['view']}: {r['status']} after {r['epochs']} epochs, best validation DSC {best} -> {r['run_dir']}")
    return 0 if all(r["status"] != "interrupted" for r in results) else 130


def _predict(args: argparse.Namespace) -> int:
    from medseg.engine.c2f_predict import CASES_CSV, predict_folder

    views = None if args.view == "all" else [args.view]
    rows = predict_folder(args.run, args.input, args.output, views=views, overwrite=args.overwrite,
                          device=args.device, max_rounds=args.max_rounds)
    empty = sum(r["empty_coarse"] for r in rows)
    print(f"wrote {len(rows)} mask(s) and {CASES_CSV} to {args.output}"
          + (f"; {empty} case(s) had an empty coarse prediction" if empty else ""))
    print(f"score them with: medseg metrics --pred {args.output} --gt LABELS --metrics dice hd95 "
          f"--output {Path(args.output) / 'metrics.csv'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from medseg.engine.c2f_predict import EVAL_CSV, evaluate_run

    views = None if args.view == "all" else [args.view]
    rows = evaluate_run(args.run, args.output, views=views, overwrite=args.overwrite, device=args.device,
                        max_rounds=args.max_rounds)
    print(f"scored {len(rows)} held-out volume(s) -> {args.output or Path(args.run) / EVAL_CSV}")
    return 0
