"""``medseg cv CONFIG --folds K``: k-fold cross-validation."""
from __future__ import annotations

import argparse

from medseg.cli import add_command
from medseg.cli._options import add_comparison_options, load_with_overrides, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "cv", "k-fold cross-validation: one run per fold, mean ± std per metric; resumable.",
                    "medseg cv src/medseg/recipes/chnet/table2_busi_chnet.yaml --folds 4")
    add_comparison_options(p, "cv<K>")
    p.add_argument("--folds", type=int, required=True, help="number of folds K (at most the number of cases)")
    p.set_defaults(func=run_cv)


def run_cv(args: argparse.Namespace) -> int:
    from medseg.engine.cv import cross_validate

    return print_table(cross_validate(load_with_overrides(args), args.folds, args.output, args.split), "cv_results")
