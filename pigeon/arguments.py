"""What every ``pigeon`` command shares to answer a user's mistake as argparse answers
its own: one line naming the argument, and exit status 2.

Argument types check numbers, names and files while parsing; :class:`UsageError`
carries the mistakes that show only later (a dataset without triples, a checkpoint of
another model, a number that is wrong only beside another). A bug is not a usage
error: it keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
from pathlib import Path
from typing import Any, Callable, Sequence


class UsageError(Exception):
    """A mistake in a command line found after parsing. The message names the argument;
    :func:`pigeon.cli.main` prints it after the command's usage and exits with status 2."""


def number(kind: type, expected: str, ok: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)``, finite and accepted by ``ok``, else an error
    saying ``expected``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected} (got {text!r})") from None
        if (kind is float and not math.isfinite(value)) or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected} (got {text!r})")
        return value

    parse.__name__ = expected
    return parse


positive_int = number(int, "a positive int", lambda value: value > 0)
non_negative_int = number(int, "a non-negative int", lambda value: value >= 0)
positive_float = number(float, "a positive number", lambda value: value > 0)
non_negative_float = number(float, "a non-negative number", lambda value: value >= 0)
scale = number(float, "a number in (0, 1]", lambda value: 0 < value <= 1)
fraction = number(float, "a number in [0, 1)", lambda value: 0 <= value < 1)


def _unknown(kind: str, name: str, options: Sequence[str], explain: Callable[[str], str | None] | None) -> str:
    reason = explain(name) if explain else None
    return f"unknown {kind} {name!r}{'; ' + reason if reason else ''}; valid: {', '.join(options)}"


def name_list(kind: str, valid: Callable[[], Sequence[str]],
              explain: Callable[[str], str | None] | None = None) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated list of names from ``valid()`` (called when
    parsing, so a registry is imported only when needed), duplicates dropped;
    ``explain(name)`` may say why a name is not valid here."""

    def parse(text: str) -> tuple[str, ...]:
        names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
        if not names:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind}s (got {text!r})")
        options = list(valid())
        for name in names:
            if name not in options:
                raise argparse.ArgumentTypeError(_unknown(kind, name, options, explain))
        return tuple(names)

    parse.__name__ = f"{kind} list"
    return parse


def one_name(kind: str, valid: Callable[[], Sequence[str]],
             explain: Callable[[str], str | None] | None = None) -> Callable[[str], str]:
    """An argparse type: one name from ``valid()``, as :func:`name_list`."""

    def parse(text: str) -> str:
        options = list(valid())
        if text not in options:
            raise argparse.ArgumentTypeError(_unknown(kind, text, options, explain))
        return text

    parse.__name__ = kind
    return parse


def existing_file(text: str) -> str:
    """An argparse type: the path of a file that exists."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(
            f"expected an existing file (got {text!r}, {'a folder' if path.is_dir() else 'which does not exist'})")
    return text


def existing_folder(text: str) -> str:
    """An argparse type: the path of a folder that exists."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"expected an existing folder (got {text!r}, {'a file' if path.exists() else 'which does not exist'})")
    return text


def output_file(text: str) -> str:
    """An argparse type: a path a file can be written to (missing folders are created),
    checked before a run rather than found wrong at its end."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a file to write (got {text!r}, a folder)")
    blocking = next((parent for parent in path.parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise argparse.ArgumentTypeError(f"expected a file to write (got {text!r}, but {str(blocking)!r} is a file)")
    return text


_NAMED = re.compile(r"`(\w+)`")


def usage_error(error: ValueError, args: argparse.Namespace) -> UsageError | None:
    """A check's ``ValueError`` in the command line's words when it names one of the
    command's arguments ("Expected `batch_size` to be ..." becomes "Expected --batch-size
    to be ..."); None when it names none, so that the caller re-raises it with its
    traceback (an error about no argument is a bug, not a mistake of the user's)."""
    given = vars(args)
    named = _NAMED.findall(str(error))
    if not named or named[0] not in given:
        return None
    return UsageError(_NAMED.sub(lambda m: _flag(m.group(1)) if m.group(1) in given else m.group(0), str(error)))


@contextlib.contextmanager
def named_by(args: argparse.Namespace):
    """Inside: a ``ValueError`` that names one of ``args`` becomes a :class:`UsageError`
    (:func:`usage_error`); any other propagates unchanged. For the checks of a command's
    settings, never around a whole run, where such an error would be a bug."""
    try:
        yield
    except ValueError as error:
        usage = usage_error(error, args)
        if usage is None:
            raise
        raise usage from None


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


# ---- datasets --------------------------------------------------------------------------

def graph_datasets() -> list[str]:
    """The datasets a command without ``--root`` can load: the synthetic profiles and the
    knowledge graphs PyKEEN ships (OGB datasets are read from files under a root)."""
    from pigeon.data.datasets import Source, dataset_names, source_of

    return [name for name in dataset_names() if source_of(name) is not Source.OGB]


def why_not_a_graph_dataset(name: str) -> str | None:
    from pigeon.data.datasets import Source, dataset_names, source_of

    if name in dataset_names() and source_of(name) is Source.OGB:
        return "OGB datasets are read from files under a folder, which only `pigeon train nbfnet --root` takes"
    return None


def load_graph(name: str, scale: float | None, default_scale: float, seed: int = 0):
    """``pigeon.data.load`` for a command with ``--dataset`` and ``--scale``: ``scale``
    None is ``default_scale`` for a synthetic profile and the whole graph for a real one;
    a scale given for a real dataset, or real data missing from disk, is a
    :class:`UsageError`."""
    from pigeon.data.datasets import Source, load, source_of
    from pigeon.data.profiles import PROFILES

    if source_of(name) is Source.PROFILE:
        scale = default_scale if scale is None else scale
    elif scale is not None and scale != 1.0:
        raise UsageError(f"argument --scale: {name!r} is a real dataset and is loaded whole; only the synthetic "
                         f"profiles ({', '.join(PROFILES)}) take a scale (got {scale})")
    else:
        scale = 1.0
    try:
        return load(name, scale=scale, seed=seed)
    except FileNotFoundError as error:
        raise UsageError(f"argument --dataset: {error}") from None
