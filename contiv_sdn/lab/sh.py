"""Running external commands for the lab, always with a timeout.

The lab drives ``ip``, OVS tools and namespaces from a plain (reactor-less)
process, so it is synchronous on purpose; a command that hangs must not hang the
lab, hence the mandatory timeout.
"""

from __future__ import annotations

import os
import subprocess
from typing import Dict, Optional, Sequence


class LabError(RuntimeError):
    """Something the lab could not do; the message says what and what to try."""


def netns_prefix(netns: Optional[str]) -> list:
    return ["ip", "netns", "exec", netns] if netns else []


def run(argv: Sequence[str], netns: Optional[str] = None, timeout: float = 30,
        check: bool = True, input: Optional[str] = None,
        env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run ``argv`` (inside ``netns`` if given), capture its output as text."""
    full = netns_prefix(netns) + [str(a) for a in argv]
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                              input=input, env=full_env,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{' '.join(full)}: no answer after {timeout:g} s") from e
    except FileNotFoundError as e:
        raise LabError(f"{full[0]} not found: install it (make install)") from e
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(full)} failed ({proc.returncode}): "
                       f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def ip(*args: str, netns: Optional[str] = None, check: bool = True,
       timeout: float = 15) -> subprocess.CompletedProcess:
    """``ip ARGS`` in the root namespace, or ``ip -n NETNS ARGS`` (no fork of a shell)."""
    argv = ["ip"] + (["-n", netns] if netns else []) + list(args)
    return run(argv, timeout=timeout, check=check)
