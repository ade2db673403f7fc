"""What netctl's command table, its actions and its dispatcher share.

The :class:`Command` record (the table in ``commands``), the :class:`Context`
an action runs in (flags, streams, the netmaster client), the exit codes and
the :class:`Exit` that carries one, and the helpers both ``app`` and
``actions`` use (version text, the ``login`` config path).  Kept apart from
``app`` so that ``app`` -> ``commands`` -> ``actions`` -> here is a line, not
a cycle: each module imports alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import IO, Callable, Mapping, NoReturn, Optional, Sequence

import contiv_sdn
from contiv_sdn.netctl.client import ContivClient, split_urls
from contiv_sdn.netctl.goflag import Flag, FlagValues

EXIT_OK = 0
EXIT_HELP = 1
EXIT_REQUEST = 2
EXIT_INVALID = 3
EXIT_IO = 4


@dataclass(frozen=True)
class Command:
    """A netctl command: a group (with subcommands) or a leaf (with an action)."""

    name: str
    usage: str
    aliases: tuple[str, ...] = ()
    args_usage: str = ""
    flags: tuple[Flag, ...] = ()
    action: Optional[Callable[["Context"], None]] = None
    subcommands: tuple["Command", ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,) + self.aliases

    def has_name(self, name: str) -> bool:
        return name in self.names

    def find(self, name: str) -> Optional["Command"]:
        for sub in self.subcommands:
            if sub.has_name(name):
                return sub
        return None


class Exit(Exception):
    """Stop netctl with ``code``; ``message`` is logged as an error first."""

    def __init__(self, code: int, message: str = "", show_help: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.show_help = show_help


def client_version() -> dict[str, str]:
    return {"Version": getattr(contiv_sdn, "__version__", ""), "GitCommit": "", "BuildTime": ""}


def version_text(info: Mapping[str, object]) -> str:
    """version.StringFromInfo."""
    return "".join(f"{name}: {'' if info.get(name) is None else info.get(name)}\n"
                   for name in ("Version", "GitCommit", "BuildTime"))


def config_path(environ: Optional[Mapping[str, str]] = None) -> str:
    """~/.netctl/config.json, where ``login`` keeps the auth_proxy token."""
    home = (environ or os.environ).get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".netctl", "config.json")


class Context:
    """What an action sees: its flags and arguments, the global flags, the
    output streams and a lazily made client."""

    def __init__(self, global_flags: FlagValues, flags: FlagValues, args: Sequence[str],
                 stdout: IO[str], stderr: IO[str], stdin: IO[str], environ: Mapping[str, str]):
        self.global_flags = global_flags
        self.flags = flags
        self.args = list(args)
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        self.environ = environ
        self._client: Optional[ContivClient] = None

    @property
    def netmaster(self) -> str:
        if self.flags.is_set("netmaster"):
            return self.flags.string("netmaster")
        return self.global_flags.string("netmaster")

    @property
    def insecure(self) -> bool:
        return self.global_flags.bool("insecure") or self.flags.bool("insecure")

    def out(self, text: str) -> None:
        self.stdout.write(text)

    def fail(self, code: int, message: str = "", show_help: bool = False) -> NoReturn:
        raise Exit(code, message, show_help)

    def client(self) -> ContivClient:
        """The netmaster client (getClient in Contiv: URL check, auth token)."""
        if self._client is not None:
            return self._client
        url = self.netmaster
        for one in split_urls(url):  # URL1,URL2: several netmasters, tried in turn
            if not (one.startswith("http://") or one.startswith("https://")):
                self.fail(EXIT_HELP, f"Error connecting to netmaster: invalid URL {one!r}: "
                                     "must begin with http:// or https://")
        client = ContivClient(url, insecure=self.insecure)
        path = config_path(self.environ)
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    data = handle.read()
            except OSError as exc:
                self.fail(EXIT_INVALID, "error processing netctl config: "
                                        f"failed to read config file: {exc}")
            try:
                token = json.loads(data).get("token", "")
            except (ValueError, AttributeError) as exc:
                self.fail(EXIT_INVALID, "error processing netctl config: "
                                        f"failed to unmarshal JSON: {exc}")
            if not client.is_https:
                self.fail(EXIT_INVALID, "error processing netctl config: failed to set auth "
                                        "token: setting auth token requires a https "
                                        "auth_proxy URL")
            client.token = token
        self._client = client
        return client
