"""The one exception type for a user's mistake.

Anything raised as :class:`UserError` is printed by the CLI as a single line
(``error: <what is wrong> (<how to fix it>)``) with a non-zero exit, never as a
traceback. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input: a file, a flag, a credential."""

    def __init__(self, what: str, fix: str | None = None) -> None:
        self.what = what
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        """The one line the CLI prints."""
        return f"{self.what} ({self.fix})" if self.fix else self.what
