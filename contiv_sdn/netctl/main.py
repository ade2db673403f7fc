"""The ``netctl`` console script."""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn, Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    """Run netctl and exit with its status (see contiv_sdn.netctl.app)."""
    from contiv_sdn.netctl.app import run
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = run(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BrokenPipeError:
        # `netctl net ls | head`: the reader left; stop quietly like Go does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()
