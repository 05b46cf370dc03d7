"""Errors an operator can act on (a setting, a folder, the machine), as opposed to bugs.

The command line prints them as one line naming the path or setting and exits non-zero.
"""


class OperatorError(RuntimeError):
    pass
