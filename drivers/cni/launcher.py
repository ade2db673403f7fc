"""A lean executable for ``contiv-cni``: ``python -IS`` with the package's path written in.

A runtime starts the plugin for every VERSION, ADD and DEL (podman: VERSION, ADD,
VERSION, DEL per ``run --rm``), so interpreter start-up is paid four times per
container.  The console script pip writes (``.venv/bin/contiv-cni``) starts Python
with ``site``: the venv's site-packages, every ``.pth`` file in it (the editable
install's finder, setuptools' ``distutils`` hack), user site — about 5 ms per run
for nothing the plugin uses, since it needs only the standard library and this
repository's ``drivers`` and ``contiv_sdn`` packages.

The launcher is a two-line Python script whose ``#!`` line runs this interpreter
with ``-I -S`` (isolated: no ``PYTHON*`` variables, no script or user directory on
the path; no ``site``) and whose ``sys.path`` gets the folder(s) the packages were
found in when it was written.  ``-I`` is also what a plugin run by a container
runtime wants: nothing in the runtime's environment can redirect its imports.

It runs :func:`drivers.cni.entry.run`: a runtime's usual VERSION query (podman asks
twice per container) is answered from a table without loading any JSON library,
everything else by :func:`drivers.cni.main.main`.  Once the answer is written the
launcher flushes stdout and stderr and leaves with ``os._exit``: the plugin holds no
other buffered output, files or children, and skipping the interpreter's teardown
(freeing every module) saves about 3 ms per run here.

If the packages are not there any more (the checkout moved, a broken upgrade) the
launcher still answers as a CNI plugin must — CNI error JSON on stdout, code 999,
saying what to do — instead of a traceback the runtime cannot show.

Write one with ``python -m drivers.cni.launcher /opt/cni/bin/contiv-cni`` (using the
venv's python).

``--native`` (what to install, and what the lab's podman gets): DEST becomes the C
shim (``drivers/cni/shim.c``, compiled here with ``cc``) that forwards each call to
netplugin's ``POST /v1/cni``, where the same Python code answers it already loaded
(a millisecond instead of 8-20 ms of start-up per run: see the shim's header for the
figures), and this launcher is written next to it as ``DEST.py``, the shim's fallback
for every answer it cannot give itself (no netplugin, a configuration it will not
guess about).  Without a working ``cc`` DEST is this launcher, as without ``--native``,
and the command says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, Optional, Sequence, Tuple

#: Linux reads at most this many bytes of a ``#!`` line (BINPRM_BUF_SIZE, 5.1+).
MAX_SHEBANG = 255

_TEMPLATE = '''#!{python} -IS
# contiv-cni, written by "python -m drivers.cni.launcher" (drivers/cni/launcher.py): Python
# isolated and without site (start-up is paid per container), the package on this path.
import sys
sys.path[:0] = {paths!r}
try:
    from drivers.cni.entry import run
except BaseException as e:
    import json
    sys.stdout.write(json.dumps({{
        "cniVersion": "1.1.0", "code": 999,
        "msg": "contiv-cni cannot load its package from " + ", ".join(sys.path[:{count}])
               + ": " + type(e).__name__ + ": " + str(e)[:300],
        "details": "reinstall contiv-sdn, then write this launcher again: "
                   "python -m drivers.cni.launcher " + sys.argv[0]}}) + "\\n")
    sys.exit(1)
status = run()
try:  # run() wrote its answer; skip the interpreter's teardown (~3 ms of module cleanup)
    sys.stdout.flush()
    sys.stderr.flush()
except BaseException:
    status = status or 1
import os
os._exit(status)
'''


def package_paths() -> List[str]:
    """The folder(s) holding the ``drivers`` and ``contiv_sdn`` packages of this install."""
    import contiv_sdn
    import drivers
    out: List[str] = []
    for pkg in (drivers, contiv_sdn):
        root = os.path.dirname(os.path.dirname(os.path.abspath(pkg.__file__ or "")))
        if root not in out:
            out.append(root)
    return out


def launcher_text(python: Optional[str] = None,
                  paths: Optional[Sequence[str]] = None) -> str:
    """The launcher script for interpreter ``python`` (default: this one) importing the
    packages from ``paths`` (default: where this install has them)."""
    python = os.path.abspath(python or sys.executable)
    paths = list(paths if paths is not None else package_paths())
    if any(c.isspace() for c in python) or len(f"#!{python} -IS") > MAX_SHEBANG:
        raise ValueError(f"interpreter path {python!r} cannot be used in a #! line (no "
                         f"spaces, at most {MAX_SHEBANG - 6} characters): use the console "
                         "script contiv-cni instead")
    return _TEMPLATE.format(python=python, paths=paths, count=len(paths))


def write_launcher(dest: str, python: Optional[str] = None,
                   paths: Optional[Sequence[str]] = None) -> str:
    """Write the launcher to ``dest`` (replacing a file or link there atomically), mode
    0755; returns ``dest``."""
    text = launcher_text(python, paths)

    def fill(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)
    return _replace_atomically(dest, fill)


def _replace_atomically(dest: str, fill: Callable[[str], None]) -> str:
    """``fill(tmp)`` writes a temporary file next to ``dest``, which then replaces
    ``dest`` (a file or link) in one rename, mode 0755; nothing is left on failure."""
    folder = os.path.dirname(os.path.abspath(dest))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".contiv-cni.")
    os.close(fd)
    try:
        fill(tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dest


#: The shim's source, next to this file.
SHIM_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.c")
#: How the shim is compiled (plus -DFALLBACK, -DDEFAULT_SOCKET, -DCNI_VERSIONS, -o).
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")


def _c_string(text: str) -> str:
    """``text`` as a C string literal; only plain printable ASCII paths are accepted
    (the shim also prints the path inside a JSON string)."""
    if not text or any(not (" " <= c <= "~") or c in '"\\' for c in text):
        raise ValueError(f"path {text!r} cannot be compiled into the shim (printable ASCII "
                         "without quotes or backslashes only)")
    return f'"{text}"'


def compile_shim(dest: str, fallback: str, cc: Optional[str] = None,
                 default_socket: Optional[str] = None) -> str:
    """Compile :data:`SHIM_SOURCE` into ``dest`` (atomically), its fallback ``fallback``,
    netplugin's socket when the configuration names none ``default_socket`` (default:
    the Python plugin's); raises :class:`OSError` (with the compiler's words) or
    :class:`ValueError`."""
    if default_socket is None:
        from drivers.cni.main import DEFAULT_SOCKET as default_socket
    from drivers.cni.versions import SUPPORTED
    defines = [f"-DFALLBACK={_c_string(os.path.abspath(fallback))}",
               f"-DDEFAULT_SOCKET={_c_string(default_socket)}",
               f"-DCNI_VERSIONS={','.join(_c_string(v) for v in SUPPORTED)}"]
    cc = cc or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise OSError("no C compiler (cc) on PATH")

    def fill(tmp: str) -> None:
        proc = subprocess.run([cc, *CFLAGS, *defines, "-o", tmp, SHIM_SOURCE],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise OSError(f"{cc} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return _replace_atomically(dest, fill)


def write_native(dest: str, cc: Optional[str] = None) -> Tuple[bool, str]:
    """The shim at ``dest`` with this launcher at ``dest + ".py"`` as its fallback:
    ``(True, "")``; or, when the shim cannot be compiled, this launcher at ``dest``:
    ``(False, why)``."""
    fallback = write_launcher(dest + ".py")
    try:
        compile_shim(dest, fallback, cc)
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        write_launcher(dest)
        return False, str(e)
    return True, ""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m drivers.cni.launcher [--native] DEST``: write the plugin to DEST."""
    args = list(sys.argv[1:] if argv is None else argv)
    native = bool(args) and args[0] == "--native"
    if native:
        args = args[1:]
    if len(args) != 1 or args[0].startswith("-"):
        sys.stderr.write("usage: python -m drivers.cni.launcher [--native] DEST   (e.g. "
                         "/opt/cni/bin/contiv-cni; --native: the C shim, this launcher "
                         "as DEST.py)\n")
        return 2
    try:
        if native:
            done, why = write_native(args[0])
        else:
            write_launcher(args[0])
    except (OSError, ValueError) as e:
        sys.stderr.write(f"contiv-cni launcher: cannot write {args[0]}: {e}\n")
        return 1
    if not native:
        sys.stdout.write(f"wrote {args[0]} ({sys.executable} -IS)\n")
    elif done:
        sys.stdout.write(f"wrote {args[0]} (the C shim, forwarding to netplugin) and "
                         f"{args[0]}.py (its fallback: {sys.executable} -IS)\n")
    else:
        sys.stdout.write(f"wrote {args[0]} ({sys.executable} -IS): the C shim could not be "
                         f"built ({why}); install gcc and run this again for the faster "
                         "plugin\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
