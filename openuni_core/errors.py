"""The exceptions the engine raises for anything a user can fix.

Messages name the problem and the fix; callers (the CLI, the ComfyUI nodes) show them as they are.
"""

import torch


class OpenUniError(ValueError):
    """A problem with the user's files or inputs, explained in words they can act on."""


class MissingModelFilesError(OpenUniError):
    """Model files are absent and downloading was not requested (or not possible)."""


class OpenUniOutOfMemoryError(torch.OutOfMemoryError, OpenUniError):
    """The device ran out of memory. Still a `torch.OutOfMemoryError`, so hosts that recover from one (ComfyUI
    unloads its models and tells the user) keep doing so, and an `OpenUniError` carrying the fix."""
