"""Exceptions that carry a message meant for the user.

The CLI prints a ``FastmedError`` as ``error: <message>`` and exits with
status 2, without a traceback; anything else is a bug and keeps its traceback.
"""


class FastmedError(Exception):
    """Bad user input or an unusable file; the message says which and why."""


class ConfigError(FastmedError, ValueError):
    """An unknown option, a value of the wrong type, or a bad config file."""


class DataError(FastmedError, ValueError):
    """A dataset folder or file that cannot be used as given."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a training run; ``run`` is its folder, ``resumable`` whether ``weights/last.pt`` exists.

    Raised by the fit loop so that the CLI can print the command that resumes the run.
    """

    def __init__(self, run: str, resumable: bool):
        super().__init__(run)
        self.run, self.resumable = run, resumable
