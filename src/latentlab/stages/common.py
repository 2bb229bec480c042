"""What every stage shares: the train/test protocol, the command line built from a
stage's signature, and the wrapper that turns a user error into one line and exit 2."""

from __future__ import annotations

import argparse
import errno
import inspect
import resource
import sys
import tempfile
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentlab.config import load_params
from latentlab.errors import LatentlabError, OutputError


def by_protocol(protocol: str, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(what is fitted, what is scored) under ``protocol``. ``all``: both splits are
    fitted and the fitted points themselves are scored, returned as None; ``train_test``:
    fit on train, score test."""
    if protocol == "all":
        return np.concatenate([train, test]), None
    return train, test


def scored(protocol: str, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The scored samples' rows of a per-sample array under ``protocol``."""
    fit, score = by_protocol(protocol, train, test)
    return fit if score is None else score


def timed(stage: Callable[..., str], cfg: Mapping[str, Any], *args: Any, **kwargs: Any) -> str:
    """Run one stage and print its summary line with wall time and peak memory."""
    t = time.perf_counter()
    summary = stage(cfg, *args, **kwargs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(f"[{stage.__name__}] {summary} ({time.perf_counter() - t:.1f}s, peak memory {peak:.2f} GiB)",
          flush=True)
    return summary


# Arguments a stage takes from the in-process runner only, never from its command line.
IN_PROCESS_ONLY = ("run_id",)


def is_output(name: str) -> bool:
    """Stage parameters named out, *_out or *_dir are what the stage writes."""
    return name == "out" or name.endswith(("_out", "_dir"))


def parse_args(stage: Callable[..., str], argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The stage's keyword arguments from a command line: each parameter after ``cfg`` is a
    ``--flag`` of the same name (dashes for underscores) taking a path; a ``list[Path]``
    takes several; one with a default may be left out."""
    p = argparse.ArgumentParser(prog=f"python -m {stage.__module__}",
                                description=(stage.__doc__ or "").strip().split("\n\n")[0])
    hints = typing.get_type_hints(stage)
    for name, param in list(inspect.signature(stage).parameters.items())[1:]:
        if name in IN_PROCESS_ONLY:
            continue
        many = typing.get_origin(hints.get(name)) is list
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=Path, nargs="+" if many else None,
                       required=param.default is inspect.Parameter.empty,
                       help="written by the stage" if is_output(name) else "read by the stage")
    return vars(p.parse_args(argv))


def outputs(stage: Callable[..., str], *args: Any, **kwargs: Any) -> list[tuple[str, Path]]:
    """The (parameter, path) pairs a stage writes."""
    bound = inspect.signature(stage).bind_partial(None, *args, **kwargs).arguments
    return [(name, Path(v)) for name, v in bound.items() if isinstance(v, (str, Path)) and is_output(name)]


def check_writable(stage: Callable[..., str], *args: Any, **kwargs: Any) -> None:
    """Every output folder exists (or can be made) and takes a file, before any work."""
    for name, path in outputs(stage, *args, **kwargs):
        folder = path if name.endswith("_dir") else path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as err:
            raise OutputError(f"cannot write {path} ({name}): {err.strerror or err} in {folder}; "
                              "make the folder writable (or free space) and run again; nothing was run") from None


# What a full disk, a read-only or missing folder look like from Python.
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}


def run(stage: Callable[..., str], *args: Any, params: str | Path = "params.yaml", **kwargs: Any) -> None:
    """Run a stage from the command line on validated ``params.yaml``.

    A user error (bad config, bad data, an output folder it cannot write, a full disk,
    an unreachable tracking server) is one clear line on stderr and exit code 2. Outputs
    are written atomically, so a failed stage leaves none behind.
    """
    try:
        cfg = load_params(params)
        check_writable(stage, *args, **kwargs)
        timed(stage, cfg, *args, **kwargs)
    except LatentlabError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as err:
        if err.errno not in WRITE_ERRORS:
            raise
        where = f" {err.filename}" if err.filename else ""
        print(f"error: [{stage.__name__}] could not write{where}: {err.strerror or err}. No output of this stage "
              "was left behind (each is written to a temporary file first); free space or fix the folder's "
              "permissions and run again", file=sys.stderr)
        raise SystemExit(2) from None


def main(stage: Callable[..., str], argv: Sequence[str] | None = None) -> None:
    """A DVC stage's entry point: ``run(stage)`` on the arguments of its command line."""
    run(stage, **parse_args(stage, argv))
