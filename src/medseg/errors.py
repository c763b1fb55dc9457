"""User-facing errors: the CLI prints their message (no traceback)."""


class UserError(Exception):
    """An error caused by input the user can fix; the message names the file/key and the fix."""


class DataError(UserError, ValueError):
    """A dataset that cannot be read as configured."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, truncated or belongs to another model."""


class TrainingError(UserError, RuntimeError):
    """Training cannot continue (e.g. non-finite loss); the last good checkpoint is kept."""
