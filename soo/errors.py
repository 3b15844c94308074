"""User-facing errors: one line naming the input and the fix, exit code 2."""


class SooError(Exception):
    """An error in the user's input (params, model path, data file, CLI use).

    Entry points print ``str(error)`` as one line and exit with ``exit_code``; nothing else is
    caught, so programming errors keep their traceback.
    """

    exit_code = 2


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for
    quoting a library's error inside a one-line SooError."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class ParamsError(SooError):
    """params.yaml is unreadable or invalid."""


class DataError(SooError):
    """A data file is missing, corrupt or of the wrong schema."""


class TrainError(SooError):
    """Training could not run or did not finish."""
