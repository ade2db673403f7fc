"""What the ``contiv-cni`` launcher runs: a runtime's usual VERSION query answered from a
table (:mod:`drivers.cni.versions`: no JSON library loaded), anything else by
:func:`drivers.cni.main.main` with the stdin read here.  Kept to ``os`` and ``sys``:
this is imported on every plugin run before anything else."""

import os
import sys

from drivers.cni.versions import canned_version_answer


def run() -> int:
    """One plugin run; the exit status (the answer is written to stdout)."""
    stdin = None
    if os.environ.get("CNI_COMMAND") == "VERSION":
        try:
            stdin = sys.stdin.buffer.read() if not sys.stdin.isatty() else b""
        except (OSError, ValueError, AttributeError):
            stdin = None  # main() meets the same problem and answers it as it always does
        answer = canned_version_answer(stdin) if stdin is not None else None
        if answer is not None:
            try:
                sys.stdout.buffer.write(answer)
                sys.stdout.flush()
            except (OSError, ValueError, AttributeError):  # no stdout: nothing to tell
                return 1
            return 0
    from drivers.cni.main import main
    return main(stdin)
