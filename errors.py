"""The one exception type that means "the user asked for something we cannot do".

Anything raised as a ``UserError`` reaches the user as its message alone (no traceback)
and ends the program with exit code 2. Messages say what is wrong and what to do.
"""


class UserError(Exception):
    """A bad flag, graph, data folder or device request, explained in the message."""
