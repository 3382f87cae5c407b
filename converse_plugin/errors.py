"""Exceptions for errors a user can cause (a bad option, file, image or checkpoint, a diverging run).

Every one derives from :class:`UserError`. ``basicsr train`` / ``basicsr test`` catch ``UserError``
and print ``basicsr <command>: error: <message>`` (one message, no traceback) and exit with the
error's :attr:`UserError.exit_code`. Each class also derives from the built-in exception a caller
would expect (``ValueError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.
"""
from __future__ import annotations

__all__ = ['UserError', 'OptionError', 'DataError', 'DataFileNotFoundError', 'CheckpointError',
           'CheckpointNotFoundError', 'TrainingDivergedError', 'user_message', 'first_line', 'construction_hint']


class UserError(Exception):
    """Base of the errors a user can fix; the message names the file or key and what was expected."""

    exit_code = 2


class OptionError(UserError, ValueError):
    """A bad option file or command line: invalid YAML, unknown ``type``, missing key, bad value."""


class DataError(UserError, ValueError):
    """Bad data: an image that cannot be decoded, is too small, a folder without images."""


class DataFileNotFoundError(UserError, FileNotFoundError):
    """A data folder or file named in the options does not exist."""


class CheckpointError(UserError, ValueError):
    """A checkpoint or training state that is truncated, not a checkpoint, unsafe, or does not match."""


class CheckpointNotFoundError(UserError, FileNotFoundError):
    """A checkpoint or training state named in the options does not exist."""


class TrainingDivergedError(UserError, FloatingPointError):
    """NaN or Inf in the network input or the loss: training stopped before it went on with garbage."""

    exit_code = 3


_WORKER_MARK = 'Original Traceback (most recent call last):'


def user_message(err: BaseException) -> str:
    """The message of ``err`` to show the user.

    A ``UserError`` raised inside a DataLoader worker is re-raised in the main process with the
    worker's whole traceback as its message; only the last line (the original message) is kept.
    """
    text = str(err)
    if _WORKER_MARK in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        head, sep, tail = last.partition(': ')
        text = tail if sep and '.' in head and ' ' not in head else last  # drop 'module.Class: '
    return text


def first_line(err: BaseException, empty: str = '') -> str:
    """The first non-empty line of ``err``'s message (``empty`` when it has none): torch and BasicSR errors
    often carry a C++ stack or a traceback below it."""
    text = str(err).strip()
    return text.splitlines()[0] if text else empty


def construction_hint(err: BaseException) -> str:
    """What a user can do about an error raised while a model or loss is built on this machine ('' if
    nothing specific): a download that cannot happen offline, or a GPU that is not there."""
    lowered = str(err).lower()
    if 'nvidia driver' in lowered or ('cuda' in lowered and 'available' in lowered):
        return '; it needs a CUDA device, and none is available'
    if 'urlopen' in lowered or type(err).__name__ in ('URLError', 'HTTPError') or 'download' in lowered:
        return ('; it tried to download weights, which this machine cannot do (the perceptual loss needs '
                "torchvision's vgg19-dcbb9e9d.pth at experiments/pretrained_models/ under the working directory)")
    return ''
