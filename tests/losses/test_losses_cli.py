"""``medseg losses`` lists every registered loss, one line each."""
from __future__ import annotations

from medseg.cli import main
from medseg.losses import list_losses


def test_cli_lists_losses(capsys):
    assert main(["losses", "--requires"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines if line and not line.startswith(("Combine", "\n")) and
             line.split()[0] in list_losses()]
    assert names == sorted(list_losses())
    assert any(line.startswith("cwcd") and "needs: contour" in line for line in lines)
