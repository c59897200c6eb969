"""The one error type users see: a clear message, no traceback (the CLI prints it and exits 1)."""


class TunewiseError(Exception):
    """An error the user can fix: bad file, bad config, missing model.

    The message must name what is wrong (file and line, config key, value) and what to do.
    """
