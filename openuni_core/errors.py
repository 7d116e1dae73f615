"""The one exception type the engine raises for anything a user can fix.

Messages name the problem and the fix; callers (the CLI, the ComfyUI nodes) show them as they are.
"""


class OpenUniError(ValueError):
    """A problem with the user's files or inputs, explained in words they can act on."""


class MissingModelFilesError(OpenUniError):
    """Model files are absent and downloading was not requested (or not possible)."""


class InterruptedError_(OpenUniError):
    """Raised by the default interrupt hook; ComfyUI passes its own exception instead."""
