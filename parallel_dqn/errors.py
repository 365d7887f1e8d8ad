"""The exceptions that end a run in a way the user is told about in one line.

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


#: exit status of a run that stopped on a signal after writing a checkpoint (EX_TEMPFAIL: "try again")
EXIT_PREEMPTED = 75


class StoppedAfterCheckpoint(Exception):
    """The run stopped on request (SIGTERM, SIGUSR1) after writing a checkpoint; resume it with ``--resume``."""

    def __init__(self, reason: str, checkpoint: str | None = None) -> None:
        self.reason = reason
        self.checkpoint = checkpoint
        where = f"checkpoint {checkpoint} written" if checkpoint else "checkpoint written"
        super().__init__(f"stopped by {reason}: {where}")
