"""The one error type of the data layer."""


class DataFormatError(ValueError):
    """A data file does not have the expected layout.

    The message names the file, the 1-based line and what was expected, e.g.
    ``ratings.csv:17: expected 4 comma-separated fields (user, item, rating, time), got '1,2,3'``.
    """

    def __init__(self, path, line, expected, got=None):
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        msg = f"{where}: expected {expected}"
        if got is not None:
            got = got.rstrip("\r\n")
            msg += f", got {got[:200]!r}"
        super().__init__(msg)
