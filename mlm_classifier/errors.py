"""The one error of bad input, at the bottom of the package: every layer raises it, the scripts print it."""


class InputError(ValueError):
    """Bad user input: a file, row, label or flag at fault. The scripts print it as one line, `error: ...`, and exit
    with status 1, never a traceback."""
