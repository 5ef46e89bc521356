"""The project's exceptions. Each says what was wrong and what to do about it."""


class AtariSpeechError(Exception):
    """Base class of every error this project raises on purpose."""


class UnknownGame(AtariSpeechError, ValueError):
    """A game name that is neither a catalogue name nor an ALE ROM id."""


class InvalidTrajectoryId(AtariSpeechError, ValueError):
    """A trajectory ID that does not match the schema's pattern."""


class TrajectoryNotFound(AtariSpeechError, LookupError):
    """No trajectory with this ID in the configured store."""


class ConfigError(AtariSpeechError, ValueError):
    """A setting has a value the server cannot run with."""


class ReplayDivergence(AtariSpeechError):
    """Re-simulation disagreed with the log at a frame."""

    def __init__(self, traj_id: str, frame: int, field: str, expected: object, actual: object) -> None:
        self.traj_id = traj_id
        self.frame = frame
        self.field = field
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{traj_id}: replay diverged at frame {frame}: {field} is {actual!r} in re-simulation "
            f"but {expected!r} in the log"
        )

    def __reduce__(self):  # pickles whole (it is raised in a worker process of a parallel export)
        return type(self), (self.traj_id, self.frame, self.field, self.expected, self.actual)


class StorageError(AtariSpeechError):
    """The store cannot be reached or written; the message names the setting to fix."""


class BadMessage(AtariSpeechError, ValueError):
    """A client's message the server cannot act on; `code` and `message` go back to that client in an `error`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AudioRejected(BadMessage):
    """A microphone chunk outside the limits (rate, size, length of an episode); refused with its own code."""

    def __init__(self, message: str, code: str = "audio_rejected") -> None:
        super().__init__(code, message)


class VideoExportError(AtariSpeechError):
    """ffmpeg failed, or the trajectory cannot be exported; the message says why."""


class ReplayHTTPError(AtariSpeechError):
    """A replay request that cannot be served: an HTTP status and a message for the page or the API."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
