"""The CNI versions the plugin speaks, and the VERSION answer to a runtime's canned query.

No imports: the launcher (:mod:`drivers.cni.launcher`) consults this before anything
else.  A runtime asks VERSION before ADD and before DEL (podman: twice per
``run --rm``), always with the same stdin libcni builds, ``{"cniVersion":"1.0.0"}``;
answering that from a table takes no JSON library (``json`` pulls in ``re`` and
``enum``: ~7 ms per run on a small VM, the plugin's whole start-up being ~20 ms).

:func:`canned_version_answer` matches stdin byte for byte against those queries (one
per supported version, with or without the space after the colon, JSON blanks
around): it is a lookup of inputs whose answer is known, not a parser — anything
else goes the full way (:func:`drivers.cni.spec.read_stdin`, strict JSON), and
``tests.test_drv_cni_launcher`` checks each table entry against that full way.
"""

SUPPORTED = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = "1.1.0"

_BLANKS = b" \t\r\n"  # JSON's whitespace (bytes.strip() would also take \v and \f)


def _answer(version: str) -> bytes:
    listed = ", ".join(f'"{v}"' for v in SUPPORTED)
    return f'{{"cniVersion": "{version}", "supportedVersions": [{listed}]}}\n'.encode()


#: stdin of a VERSION query (blanks stripped) -> the answer main() writes for it
CANNED = {f'{{"cniVersion":{sep}"{v}"}}'.encode(): _answer(v)
          for v in SUPPORTED for sep in ("", " ")}


def canned_version_answer(stdin: bytes):  # -> Optional[bytes]; no typing import here
    """The exact VERSION answer for a runtime's usual query, or None (then parse it)."""
    return CANNED.get(stdin.strip(_BLANKS))
