"""The one error hierarchy shared by every layer of sed-deploy.

`SedDeployError` and its subclasses mean "the user asked for something that cannot be done": a bad
argument, a missing file, a checkpoint of the wrong backbone. Their message is one line that says
what was wrong and what to do; the command-line tools print it and exit 1 without a traceback.

`InternalError` means a bug in sed-deploy. It deliberately does not subclass `SedDeployError`, so a
CLI never hides it behind a one-line message.
"""

from __future__ import annotations


class SedDeployError(Exception):
    """A user-facing error: one line, what was wrong and what to do."""


class ConfigError(SedDeployError):
    """Unknown backbone, bad option value, inconsistent settings."""


class CheckpointError(SedDeployError):
    """A checkpoint that cannot be read or does not fit the model."""


class VocabularyError(SedDeployError):
    """An empty, unreadable or unknown vocabulary."""


class ImageError(SedDeployError):
    """An image that cannot be decoded or converted."""


class MissingDependencyError(SedDeployError):
    """An optional package is needed for the requested feature and is not installed."""


class ArtifactError(SedDeployError):
    """Missing, stale or corrupt artifacts (graphs, manifest, caches, engines)."""


class InternalError(Exception):
    """A bug in sed-deploy (not a user error): always shown with its traceback."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
