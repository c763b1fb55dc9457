"""One CLI module per command (nnU-Net's one entry point per verb) and every --help example runnable as
printed: each example parses with medseg's own parser and every repository file it names exists."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import shlex
from pathlib import Path

import pytest

import medseg.cli as cli
from medseg.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(cli.__path__) if not m.name.startswith("_"))


def _commands_of(module: str) -> list[str]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    importlib.import_module(f"medseg.cli.{module}").register(sub)
    return sorted(sub.choices)


@pytest.mark.parametrize("module", _modules())
def test_each_module_holds_the_command_of_its_name(module: str) -> None:
    assert _commands_of(module) == [module.replace("_", "-")]


def _examples() -> list[tuple[str, str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = []
    seen: set[int] = set()
    todo = list(sub.choices.items())
    while todo:
        name, p = todo.pop()
        if id(p) in seen:
            continue
        seen.add(id(p))
        for line in (p.epilog or "").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("medseg "):
                out.append((name, line))
        for action in p._actions:  # command groups (c2f, nnunet): their sub-commands' examples too
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.items())
    return sorted(out)


@pytest.mark.parametrize(("command", "example"), _examples())
def test_help_examples_parse_and_name_existing_files(command: str, example: str) -> None:
    argv = shlex.split(example)[1:]
    build_parser().parse_args(argv)  # SystemExit (red) when an example no longer matches the options
    for token in argv:  # a recipe path (a .yaml with a folder) or any path into the package must exist
        if token.startswith("src/medseg/") or (token.endswith((".yaml", ".yml")) and "/" in token):
            assert (REPO / token).exists(), f"`medseg {command} --help` names {token}, which does not exist"
