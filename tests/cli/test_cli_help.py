"""Every command has --help with an example; `medseg models` lists the registry."""
from __future__ import annotations

import pytest

from medseg.cli import build_parser, main


def commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(sub.choices)


def test_core_commands_exist() -> None:
    assert {"train", "evaluate", "predict", "models", "demo", "runs"} <= set(commands())


@pytest.mark.parametrize("name", commands())
def test_help_has_example(name: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "Example" in out and f"medseg {name}" in out.replace("medseg  ", "medseg ")


def test_models_lists_registry(capsys: pytest.CaptureFixture) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "unet " in out and "unet3d" in out


def test_user_error_is_one_line(tmp_path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", str(tmp_path / "nope.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: config file not found") and "Traceback" not in err
