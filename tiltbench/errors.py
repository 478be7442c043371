"""The one user-facing exception type.

Library code raises `UserError` with the fix in the sentence; the CLI prints it as one line on stderr and
exits with status 2 (click's status for usage errors). Any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: bad option, missing file, unknown task. The message is one actionable line."""
