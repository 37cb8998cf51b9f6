"""Reading and writing state files: every file is read with ``torch.load(weights_only=True)`` (tensors and
plain Python data only, so a file from elsewhere cannot run code while it is read); a file that needs full
unpickling is refused unless the user vouches for it (``swavbench --trust-checkpoints``, or
$SWAVBENCH_TRUST_CHECKPOINTS=1). Weights from other harnesses (``foreign=True``) are read with the same
allowlist, every other object in the file (Lightning hyper-parameters, an argparse.Namespace, an OmegaConf
config) replaced by an inert stand-in: nothing from the file runs. Writes go through the durable writer, so a
file is always whole."""

from __future__ import annotations

import collections
import functools
import logging
import os
import pickle
import re
import time
import types
import zipfile
from pathlib import Path
from typing import Any

import torch

from swavbench.core import durable
from swavbench.core.paths import previous

log = logging.getLogger("swavbench.state")

TRUST_ENV = "SWAVBENCH_TRUST_CHECKPOINTS"  # "1": unpickle arbitrary objects (only for files you trust)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit; the message names the file and the fix."""


class CheckpointUnavailable(CheckpointError):
    """The file could not be read for a reason outside it (EIO, ESTALE, out of memory), even after retries:
    it is not corrupt, and must not be set aside."""


READ_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)  # pauses (s) between reads failing with an I/O error


class UnsafeCheckpointError(CheckpointError):
    """The file holds pickled Python objects beyond tensors and plain data; it was not unpickled."""


def trust_checkpoints(*, trusted: bool = True) -> None:
    """Allow (or forbid again) full unpickling in this process and the jobs it starts (environment)."""
    if trusted:
        os.environ[TRUST_ENV] = "1"
    else:
        os.environ.pop(TRUST_ENV, None)


def _trusted() -> bool:
    return os.environ.get(TRUST_ENV, "") == "1"


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through the durable writer: the file at ``path`` is always whole."""
    return durable.torch_save(obj, path)


def save_rotating(obj: Any, path: str | Path) -> Path:
    """Write ``path`` durably, keeping the one it replaces as ``<name>.prev``; ``path`` exists (old or
    new) at every moment."""
    durable.keep_previous(path, previous(path))
    return durable.torch_save(obj, path)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False, foreign: bool = False
) -> dict:
    """Load a checkpoint, turning truncation and corruption into a CheckpointError. ``mmap``: tensors stay
    on disk until touched (reading a few fields of a large file). ``foreign``: objects beyond tensors and
    plain data are read as inert stand-ins (Foreign) instead of refused: for reading weights only."""
    path = Path(path)
    for delay in (*READ_RETRY_DELAYS, None):
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        try:
            if foreign and not _trusted() and _names_objects(path):  # one read, through the stand-ins
                return _load(path, map_location, mmap=mmap, pickle_module=_foreign_pickle())
            try:
                return _load(path, map_location, mmap=mmap)
            except UnsafeCheckpointError:
                if not foreign or _trusted():
                    raise
                # a legacy (pre-zip) file, which the probe cannot read without its tensors
                return _load(path, map_location, mmap=mmap, pickle_module=_foreign_pickle())
        except CheckpointUnavailable:
            if delay is None:
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")


def _names_objects(path: Path) -> bool:
    """The file's pickle names objects beyond the weights-only allowlist (read without its tensors)."""
    try:
        return bool(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - a legacy or damaged file: the full read decides and says why
        return False


def _unavailable(path: Path, e: BaseException) -> CheckpointUnavailable:
    return CheckpointUnavailable(
        f"checkpoint {path} could not be read after {len(READ_RETRY_DELAYS) + 1} tries ({type(e).__name__}: "
        f"{str(e)[:200]}): an I/O or memory error, not damage, so the file was left as it is. Check the "
        "filesystem (or the job's memory) and run again"
    )


class Foreign(dict):
    """Stands in for an object of another library found in a checkpoint: keeps its name (``foreign_name``)
    and what the file stores in it, runs none of its code."""

    foreign_name = "?"

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.args = args

    def __setstate__(self, state) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.foreign_name} from a checkpoint, not loaded>"


SAFE_BUILTINS = {
    f"builtins.{t.__name__}": t for t in (dict, list, tuple, set, frozenset, int, float, str, bool)
}


@functools.cache
def _stand_in(name: str) -> type:
    log.debug("checkpoint object %s read as an inert stand-in (its code is not run)", name)
    return type(name.rpartition(".")[2], (Foreign,), {"foreign_name": name})


@functools.cache
def _foreign_pickle() -> types.ModuleType:
    """A pickle module for torch.load whose unpickler resolves the names torch's weights_only loader allows
    and turns every other name into a Foreign stand-in (logged)."""
    from torch._weights_only_unpickler import _get_allowed_globals

    allowed = {**_get_allowed_globals(), **SAFE_BUILTINS, "collections.defaultdict": collections.defaultdict}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
            full = f"{module}.{name}"
            if full in allowed:
                return allowed[full]
            return _stand_in(full)

    mod = types.ModuleType("swavbench_foreign_pickle")
    mod.Unpickler, mod.load, mod.UnpicklingError = (
        Unpickler,
        lambda f, **k: Unpickler(f, **k).load(),
        pickle.UnpicklingError,
    )
    return mod


def _load(path: Path, map_location: str | torch.device, *, mmap: bool, pickle_module=None) -> dict:
    """One read: corruption (the content does not parse) is a CheckpointError, a failure of the
    filesystem or of memory a CheckpointUnavailable (retried by the caller)."""
    try:
        if pickle_module is not None:  # foreign objects stand in: the allowlist is the unpickler's own
            ckpt = torch.load(
                path, map_location=map_location, weights_only=False, mmap=mmap, pickle_module=pickle_module
            )
        else:
            ckpt = torch.load(path, map_location=map_location, weights_only=not _trusted(), mmap=mmap)
    except FileNotFoundError as e:  # replaced or removed while it was read
        raise CheckpointError(f"checkpoint {path} does not exist") from e
    except (OSError, MemoryError) as e:  # EIO, ESTALE, ENOMEM...: the filesystem, not the file
        raise _unavailable(path, e) from e
    except RuntimeError as e:
        if re.search(r"allocate|out of memory", str(e), flags=re.I):  # ENOMEM under torch's allocator
            raise _unavailable(path, e) from e
        raise _corrupt(path, e) from e
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
        if found is None:  # not a refused object: the file is damaged (or not a torch file at all)
            raise _corrupt(path, e) from e
        raise _unsafe(path, f"it asks for {found.group(1)}") from None
    except TypeError as e:
        if pickle_module is None:
            raise
        # the pickle calls what it loaded (getattr(cls, name)(...)): code, which no inert stand-in replaces
        raise _unsafe(path, f"its objects call code: {e}") from None
    except (EOFError, zipfile.BadZipFile, ValueError) as e:
        raise _corrupt(path, e) from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a dict of tensors")
    return ckpt


def _unsafe(path: Path, what: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{path} holds pickled Python objects, not only tensors and plain data ({what}); reading it "
        "could run code from the file, so it was not loaded. Re-save it as a plain state dict, or, only if "
        "you trust where it came from, pass --trust-checkpoints (swavbench --trust-checkpoints COMMAND ...; "
        f"{TRUST_ENV}=1)"
    )


def _corrupt(path: Path, e: Exception) -> CheckpointError:
    """The error for a file that does not read: the cause in one line, and the previous good copy."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    cause = next((ln for ln in lines if ln.startswith("Unsupported operand")), lines[0] if lines else "")
    prev = previous(path)
    hint = f"; the previous good checkpoint is {prev}: resume from it with --resume {prev}"
    hint = hint if prev.is_file() else ""
    cause = f"{type(e).__name__}: {cause[:200]}"
    return CheckpointError(f"checkpoint {path} is truncated or corrupt ({cause}){hint}")
