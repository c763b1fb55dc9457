"""User errors of the nnU-Net integration: each message names the fix in one line."""
from __future__ import annotations

import os

from medseg.errors import UserError

INSTALL_HINT = "pip install 'medseg[nnunet]'"
ENV_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


class NNUNetError(UserError, RuntimeError):
    """nnU-Net is missing or not set up for the request."""


def require_nnunet() -> None:
    """Import check for the optional extra."""
    try:
        import nnunetv2  # noqa: F401
    except ImportError as err:
        raise NNUNetError(f"nnunetv2 is not installed ({err}); install the extra: {INSTALL_HINT}") from None


def require_env(*names: str) -> dict[str, str]:
    """The nnU-Net folder variables ``names`` (default: all three), or one error naming the missing ones."""
    names = names or ENV_VARS
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise NNUNetError(f"nnU-Net environment variable(s) {', '.join(missing)} not set; export them to your "
                          f"nnU-Net folders, e.g. export {missing[0]}=/data/{missing[0]} (see docs/nnunet.md)")
    return {n: os.environ[n] for n in names}
