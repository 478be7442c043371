"""tiltbench command line: thin typer commands over the library API (`tiltbench --help`).

common.py holds the app, shared options and the error edge; each command module registers its commands.
"""

# Importing registers the commands; the import order is the order of `tiltbench --help`.
from tiltbench.cli.common import app, main  # noqa: I001
from tiltbench.cli import train  # noqa: F401
from tiltbench.cli import bench, speed  # noqa: F401

__all__ = ["app", "main"]
