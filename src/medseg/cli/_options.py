"""Options shared by several commands: config overrides and encoder knobs (``train``, ``cv``, ``ablate``),
and test-time augmentation (``evaluate``, ``predict``, ``export``)."""
from __future__ import annotations

import argparse

TTA_HELP = ("test-time augmentation: flip = mean of mirrored predictions (2-D: H, W, H+W; 3-D sliding window: "
            "all 7 axis combinations), each flipped back; docs/ensemble.md (default: none)")


def add_override_options(p: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable), ``--freeze-encoder`` and ``--encoder-lr LR``."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="train the head only (encoder-head models such as chnet; the encoder keeps its BN "
                        "statistics); = --set train.freeze_encoder=true")
    p.add_argument("--encoder-lr", type=float, default=None, metavar="LR",
                   help="separate learning rate for the encoder parameters; = --set optim.encoder_lr=LR")


def overrides_of(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides plus those that ``--freeze-encoder`` / ``--encoder-lr`` stand for."""
    overrides = list(args.overrides)
    if args.freeze_encoder:
        overrides.append("train.freeze_encoder=true")
    if args.encoder_lr is not None:
        overrides.append(f"optim.encoder_lr={args.encoder_lr}")
    return overrides


def add_comparison_options(p: argparse.ArgumentParser, suffix: str) -> None:
    """The options of the commands that train several runs from one config (``cv``, ``ablate``)."""
    p.add_argument("config", help="run config YAML (e.g. a recipe under src/medseg/recipes/chnet/)")
    add_override_options(p)
    p.add_argument("--output", help=f"parent folder of the runs (default: output_dir/<name>_{suffix})")
    p.add_argument("--split", default="test", choices=["val", "test"], help="split to evaluate (default test)")


def load_with_overrides(args: argparse.Namespace):  # -> RunConfig
    """``args.config`` loaded and validated with :func:`overrides_of`."""
    from medseg.config import load_config

    return load_config(args.config, overrides_of(args))


def print_table(result: dict, table_name: str) -> int:
    """Print a finished comparison table (exit 0), or exit 3 when a run was interrupted."""
    if not result["complete"]:
        return 3
    print(result["table"])
    print(f"written: {result['parent']}/{table_name}.csv and .md")
    return 0
