"""Dividing case ids into train / val / test: from a file, seeded random, k-fold, or fixed (all cases)."""
from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.config import SplitConfig
from medseg.errors import DataError

SPLITS = ("train", "val", "test")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got '{split}'")


def _permute(ids: Sequence[str], seed: int) -> list[str]:
    order = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in order]


def _carve_val(train: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded val part (``round(fraction * n)``, at least 1 when fraction > 0 and n > 1) from ``train``."""
    if fraction <= 0 or len(train) < 2:
        return train, []
    perm = _permute(sorted(train), seed + 7919)
    n_val = min(len(train) - 1, max(1, int(round(fraction * len(train)))))
    val = set(perm[:n_val])
    return [i for i in train if i not in val], [i for i in train if i in val]


def read_split_file(path: str | Path) -> dict[str, list[str]]:
    """JSON ``{"train": [...], "val": [...], "test": [...]}`` (any subset; non-list entries such as a
    ``"source"`` note are ignored) or CSV with ``stem,split`` columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file not found: {path} (data.split.file)")
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or not {"stem", "split"} <= set(rows[0]):
            raise DataError(f"{path}: a CSV split file needs a header with columns 'stem,split'")
        out: dict[str, list[str]] = {}
        for row in rows:
            out.setdefault(row["split"].strip(), []).append(row["stem"].strip())
    else:
        try:
            out = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(out, dict):
            raise DataError(f'{path}: expected a JSON object {{"train": [...], "val": [...], "test": [...]}}')
        out = {k: [str(s) for s in v] for k, v in out.items() if isinstance(v, list)}  # "source" etc. ignored
    unknown = set(out) - set(SPLITS)
    if unknown:
        raise DataError(f"{path}: unknown split names {sorted(unknown)}; use train, val and test")
    return out


def split_ids(ids: Sequence[str], cfg: SplitConfig, split: str, root: str | Path | None = None) -> list[str]:
    """The ids of ``split`` (order kept as in ``ids``, which the caller sorts).

    - ``random``: a seeded permutation; the last ``test_fraction`` is test, then ``val_fraction`` val.
    - ``file``: the file's lists; when it has no ``val`` list, val is a seeded ``val_fraction`` of train.
      Ids in the file that have no case are an error (listed).
    - ``kfold``: a seeded permutation cut into ``folds`` parts; part ``fold`` is test, a seeded
      ``val_fraction`` of the rest is val.
    - ``fixed``: every case in every split (e.g. a dataset that is only evaluated).

    A split asked for by a fraction > 0 that gets no case (too few cases, e.g. 2 images with the default
    fractions) is a :class:`DataError` whatever ``split`` is requested, so training stops before it starts
    instead of running without validation (no ``best.pt``) and scoring an empty test table.
    """
    _check_split(split)
    ids = list(ids)
    if cfg.mode == "fixed":
        return ids
    if cfg.mode == "file":
        parts, asked = _from_file(ids, cfg, root)
    elif cfg.mode == "kfold":
        parts, asked = _kfold(ids, cfg), {"val": cfg.val_fraction}
    else:
        parts, asked = _random(ids, cfg, root), {"val": cfg.val_fraction, "test": cfg.test_fraction}
    _require_cases(parts, asked, len(ids), cfg, root)
    keep = set(parts[split])
    return [i for i in ids if i in keep]


def _fixes(cfg: SplitConfig) -> str:
    return (f"Fixes: add cases; set data.split.val_fraction / data.split.test_fraction (now {cfg.val_fraction} / "
            f"{cfg.test_fraction}) so that each split gets at least 1 case (test_fraction=0 for no test split); "
            "give an explicit split file (data.split.mode=file, data.split.file=splits.json); or, for a smoke "
            "test only, data.split.mode=fixed (train, validate and test on the same cases)")


def _require_cases(parts: dict[str, list[str]], asked: dict[str, float], n: int, cfg: SplitConfig,
                   root: str | Path | None) -> None:
    """Every split asked for with a fraction > 0 must get a case."""
    empty = [s for s, f in asked.items() if f > 0 and not parts[s]]
    if empty:
        where = f"data folder {root}" if root is not None else "the dataset"
        raise DataError(
            f"{where}: {n} case{'s' if n != 1 else ''} found, too few for split.mode={cfg.mode} "
            f"(val_fraction={cfg.val_fraction}, test_fraction={cfg.test_fraction}): the "
            f"{' and '.join(empty)} split{'s' if len(empty) > 1 else ''} would get 0 cases (a split gets "
            "round(fraction x cases)), so training would keep no best.pt and evaluation would score nothing. "
            + _fixes(cfg)
        )


def _random(ids: list[str], cfg: SplitConfig, root: str | Path | None = None) -> dict[str, list[str]]:
    perm = _permute(sorted(ids), cfg.seed)
    n = len(perm)
    n_test = int(round(cfg.test_fraction * n))
    n_val = int(round(cfg.val_fraction * n))
    if n - n_test - n_val < 1:
        where = f"data folder {root}" if root is not None else "the dataset"
        raise DataError(f"{where}: {n} cases found; the random split leaves no training case. " + _fixes(cfg))
    return {"test": perm[n - n_test:], "val": perm[n - n_test - n_val:n - n_test], "train": perm[: n - n_test - n_val]}


def _kfold(ids: list[str], cfg: SplitConfig) -> dict[str, list[str]]:
    if cfg.fold >= cfg.folds:
        raise DataError(f"split.fold={cfg.fold} but split.folds={cfg.folds}; folds are numbered 0..{cfg.folds - 1}")
    if len(ids) < cfg.folds:
        raise DataError(f"k-fold split needs at least {cfg.folds} cases, found {len(ids)}")
    perm = _permute(sorted(ids), cfg.seed)
    parts = np.array_split(np.arange(len(perm)), cfg.folds)
    test = [perm[i] for i in parts[cfg.fold]]
    rest = [i for i in perm if i not in set(test)]
    train, val = _carve_val(rest, cfg.val_fraction, cfg.seed)
    return {"train": train, "val": val, "test": test}


def _from_file(ids: list[str], cfg: SplitConfig,
               root: str | Path | None) -> tuple[dict[str, list[str]], dict[str, float]]:
    """The file's parts and the fractions applied (``val_fraction`` when val is carved from train)."""
    if cfg.file is None:
        raise DataError("split.mode is 'file' but split.file is not set; give a JSON or CSV file of stems")
    path = Path(cfg.file)
    if not path.is_absolute() and not path.exists() and root is not None:
        path = Path(root) / path
    parts = read_split_file(path)
    known = set(ids)
    missing = [s for v in parts.values() for s in v if s not in known]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} listed ids have no image/mask pair, e.g. {missing[:5]}; fix the file or the data"
        )
    train = parts.get("train", [])
    asked: dict[str, float] = {}
    if "val" not in parts:
        train, val = _carve_val(train, cfg.val_fraction, cfg.seed)
        asked = {"val": cfg.val_fraction} if train else {}  # a test-only file trains nothing
    else:
        val = parts["val"]
    return {"train": train, "val": val, "test": parts.get("test", [])}, asked
