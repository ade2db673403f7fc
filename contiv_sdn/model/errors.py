"""The one exception type of the model.

``str(error)`` is exactly the text Contiv's netmaster puts in its HTTP 500 body
(without the trailing newline), so the REST layer can pass it through unchanged
and clients that match on Contiv's messages keep working.
"""

from __future__ import annotations


class ModelError(Exception):
    """A validation failure (``Invalid Key``, ``<field> string too long``, ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class DecodeError(ModelError):
    """A request body that Go's ``json.Decoder`` would refuse (``EOF``, ``invalid character ...``,
    ``json: cannot unmarshal ...``).  A subclass so callers may tell body errors from
    validation errors; both are HTTP 500 in Contiv."""
