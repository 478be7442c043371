"""Files a run writes: atomic writes with normal modes (nothing is lost when a run is interrupted), and the
checks that keep tiltbench from overwriting what a user owns (output folders, run folders, checkpoints)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tiltbench.errors import UserError


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then os.replace: readers see old or new, never half."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; the result gets the mode any new file gets here (or the one it replaces).
        os.fchmod(fd, target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    try:  # Linux says it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


CHECKPOINT_META = "tiltbench.json"


def is_checkpoint(folder: Path) -> bool:
    """A folder written by `tiltbench finetune` (a plain HF folder plus tiltbench.json)."""
    return (Path(folder) / CHECKPOINT_META).is_file()


def run_command(folder: Path) -> str | None:
    """The tiltbench command that made a run folder ("offline-tune", "measure", "sweep"), from its config.json."""
    try:
        command = json.loads((Path(folder) / "config.json").read_text())["command"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return command if isinstance(command, str) else None


def foreign_entries(folder: Path) -> list[Path]:
    """What a folder holds besides tiltbench checkpoints (a run folder may keep the checkpoint it measures)."""
    return [p for p in folder.iterdir() if not (p.is_dir() and is_checkpoint(p))] if folder.is_dir() else []


def normal_modes(folder: Path) -> None:
    """Give every file and folder below `folder` the mode a new one gets here (some savers, transformers' among
    them, write through 0600 temp files)."""
    umask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def check_writable(folder: str | Path, option: str) -> Path:
    """Fail in a second, not after hours of work, if `folder` cannot be written (or created); creates nothing."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{option} {str(folder)!r} is a file, not a folder")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"cannot write {option} {str(folder)!r}: {str(existing)!r} is a file, not a folder")
    try:  # a real probe: permission bits say nothing for root, or on a read-only mount
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UserError(
            f"cannot write {option} {str(folder)!r}: {str(existing)!r} is not writable ({err.strerror})"
        ) from None
    return folder


def check_output_dir(
    output: str | Path,
    owner: str,
    is_owned: Callable[[Path], bool],
    overwrite: bool = False,
    beside_checkpoints: bool = False,
) -> Path:
    """Check `--output` before any work: writable, and either new, empty, or holding `owner` (e.g. "an
    offline-tune run") that the user asked to replace (`overwrite`). A folder holding anything else is never
    touched; `beside_checkpoints`: a run's files may sit next to the tiltbench checkpoints in it."""
    folder = check_writable(output, "--output")
    if is_owned(folder):
        if not overwrite:
            raise UserError(f"--output {str(folder)!r} already holds {owner}; pass --overwrite to replace it")
        return folder
    entries = list(folder.iterdir()) if folder.is_dir() else []
    if foreign_entries(folder) if beside_checkpoints else entries:
        raise UserError(
            f"--output {str(folder)!r} is not empty and holds no {owner.split(' ', 1)[1]}; choose a new or empty "
            "folder (nothing in it is overwritten)"
        )
    return folder


def replace_dir(staged: Path, target: Path) -> None:
    """Move a fully written folder into place: the old contents (if any) leave only once the new ones are whole."""
    if target.exists() and any(target.iterdir()):
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old)
    else:
        os.replace(staged, target)  # a missing or empty target


# A JSON array holding only numbers (no strings, objects or arrays inside), as json.dumps(indent=2) lays it out.
_NUMBER_ARRAY = re.compile(r"\[\s*\n[-+0-9.eE,\s]*?\n\s*\]")


def write_json_atomic(path: str | Path, obj: object) -> None:
    """Indented JSON, but every array of numbers on one line (latency samples, kept counts): readable, and a
    tenth of the size of one number per line."""
    text = json.dumps(obj, indent=2, sort_keys=False)
    text = _NUMBER_ARRAY.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(0)[1:-1].split(",")) + "]", text)
    write_text_atomic(path, text + "\n")
