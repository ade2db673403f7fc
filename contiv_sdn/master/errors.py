"""The refusal type of the semantics layer.

``str(err)`` is the exact text Contiv's netmaster sends as the HTTP 500 body
(minus the trailing newline).  Unlike Contiv's ``core.Errorf`` no Go-style
stack trace is ever appended: users saw those leak into netctl output
(contiv/netplugin#327, #252) and they carry no information for a client.
"""

from __future__ import annotations


class MasterError(Exception):
    """A request refused by the object semantics (message is user-facing)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
