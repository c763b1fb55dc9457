"""``medseg cv CONFIG --folds K`` (k-fold cross-validation) and ``medseg ablate CONFIG --heads ...``."""
from __future__ import annotations

import argparse

from medseg.cli import add_command


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="run config YAML (e.g. a recipe under src/medseg/recipes/chnet/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--output", help="parent folder of the runs (default: output_dir/<name>_cv<K> or _ablate)")
    p.add_argument("--split", default="test", choices=["val", "test"], help="split to evaluate (default test)")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="train the head only (sets train.freeze_encoder=true; the encoder keeps its BN statistics)")
    p.add_argument("--encoder-lr", type=float, metavar="LR",
                   help="separate learning rate for the encoder parameters (sets optim.encoder_lr)")


def register(sub: argparse._SubParsersAction) -> None:
    cv = add_command(sub, "cv", "k-fold cross-validation: one run per fold, mean ± std per metric; resumable.",
                     "medseg cv src/medseg/recipes/chnet/table2_busi_chnet.yaml --folds 4")
    _common(cv)
    cv.add_argument("--folds", type=int, required=True, help="number of folds K (at most the number of cases)")
    cv.set_defaults(func=run_cv)
    ab = add_command(sub, "ablate", "Train one encoder with each head under one config; one comparison table.",
                     "medseg ablate src/medseg/recipes/chnet/kvasir_heads_cpu.yaml "
                     "--heads classification fcn32s unet_decoder")
    _common(ab)
    ab.add_argument("--heads", nargs="+", default=["classification", "classification3x3", "fcn32s", "unet_decoder"],
                    help="head names (default: all four)")
    ab.set_defaults(func=run_ablate)


def _config(args: argparse.Namespace):  # -> RunConfig
    from medseg.config import load_config

    overrides = list(args.overrides)
    if args.freeze_encoder:
        overrides.append("train.freeze_encoder=true")
    if args.encoder_lr is not None:
        overrides.append(f"optim.encoder_lr={args.encoder_lr}")
    return load_config(args.config, overrides)


def _report(result: dict, table_name: str) -> int:
    """Print a finished comparison table (exit 0), or exit 3 when a run was interrupted."""
    if not result["complete"]:
        return 3
    print(result["table"])
    print(f"written: {result['parent']}/{table_name}.csv and .md")
    return 0


def run_cv(args: argparse.Namespace) -> int:
    from medseg.engine.cv import cross_validate

    return _report(cross_validate(_config(args), args.folds, args.output, args.split), "cv_results")


def run_ablate(args: argparse.Namespace) -> int:
    from medseg.engine.ablate import ablate_heads

    return _report(ablate_heads(_config(args), args.heads, args.output, args.split), "ablate_results")
