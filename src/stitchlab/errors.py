"""The project's own error types.

Every error a user can cause (a bad file, a bad flag, a config key out of range) is a
`StitchlabError`; the command line prints its message as one line and exits with code 2.
Anything else is a bug and exits with code 1.
"""


class StitchlabError(Exception):
    """Bad input or usage: the message says what, where, and what to do."""


class DataError(StitchlabError, ValueError):
    """An IDX file or data directory is missing, malformed or fails its checksum."""


class ConfigError(StitchlabError, ValueError):
    """A configuration key, value or flag is not allowed."""


class CheckpointError(StitchlabError, ValueError):
    """A checkpoint or weights file cannot be loaded into the model asked for."""


class TrainingDiverged(StitchlabError, RuntimeError):
    """Training produced a non-finite loss; no results are written for that model."""


class OutputError(StitchlabError, OSError):
    """A file of the run could not be written (disk full, read-only, no permission)."""


class RunDirInUse(StitchlabError):
    """Another live stitchlab process holds the run directory's lock."""


class Terminated(BaseException):
    """SIGTERM arrived. Raised by the command line's handler so that cleanups run.

    Like KeyboardInterrupt it derives from BaseException, not StitchlabError, so that no
    ``except Exception`` swallows it on the way out.
    """
