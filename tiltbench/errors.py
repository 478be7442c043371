"""The one user-facing exception type.

Library code raises `UserError` with the fix in the sentence; the CLI prints it as one line on stderr and
exits with status 2 (click's status for usage errors). Any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: bad option, missing file, unknown task. The message is one actionable line."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a fine-tune, after its state was saved (tiltbench/resume.py): the CLI prints how to resume
    as one line and exits 130, as shells expect of an interrupted command."""
