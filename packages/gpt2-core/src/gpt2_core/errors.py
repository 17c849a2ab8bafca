"""The exceptions the CLI turns into one line and an exit status instead of a traceback."""


class UserError(ValueError):
    """A mistake in the user's input (a flag, a file, a directory): a ``ValueError``, as Python's own
    functions raise for a bad argument, so library callers can catch it as one.

    The CLI prints its message as one line on stderr and exits with status 2, without a traceback,
    so the message must name the file or flag at fault and say what to do.
    """


class RunStopped(RuntimeError):
    """A run that stopped itself, though nothing the user typed was wrong (its loss diverged, say).

    The CLI prints the message as one line and exits with ``exit_code``, which differs from a user
    error's 2 so that a job script can tell a diverged run from a typo.
    """

    exit_code = 3
