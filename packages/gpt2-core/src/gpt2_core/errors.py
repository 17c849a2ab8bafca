"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(Exception):
    """A mistake in the user's input (a flag, a file, a directory).

    The CLI prints its message as one line on stderr and exits with status 2, without a traceback,
    so the message must name the file or flag at fault and say what to do.
    """
