"""netctl's command dispatch: global flags, command groups, leaf commands.

This reproduces how codegangsta/cli ran Contiv's netctl: global flags
(``--netmaster``, ``--insecure``, ``-h``, ``-v``) come before the command;
a group (``network``, ``policy``...) takes only ``-h``; a leaf command parses
its own flags, which may follow its positional arguments (see goflag).
Failures become an exit code, not a traceback: 0 ok, 1 usage/help,
2 netmaster unreachable, 3 error answer or invalid input, 4 local I/O.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import IO, Callable, Mapping, NoReturn, Optional, Sequence

import contiv_sdn
from contiv_sdn.netctl import goflag
from contiv_sdn.netctl import help as helptext
from contiv_sdn.netctl.client import ClientError, ContivClient
from contiv_sdn.netctl.goflag import Flag, FlagError, FlagValues

EXIT_OK = 0
EXIT_HELP = 1
EXIT_REQUEST = 2
EXIT_INVALID = 3
EXIT_IO = 4

CONTIV_DEFAULT_MASTER = "http://netmaster:9999"
# Deviation from Contiv: our netmaster listens on loopback in the demo and
# lab, so that is the default; "netmaster" rarely resolves on a dev machine.
DEFAULT_MASTER = "http://127.0.0.1:9999"

APP_NAME = "netctl"
APP_USAGE = "A command line client for Contiv netplugin"

NETMASTER_FLAG = goflag.string_flag(
    "netmaster",
    "The URL of the netmaster (Contiv's default was " + CONTIV_DEFAULT_MASTER
    + "; this netctl defaults to " + DEFAULT_MASTER + ")",
    default=DEFAULT_MASTER, env="NETMASTER")
INSECURE_FLAG = goflag.bool_flag(
    "insecure", "if true, strict certificate checking will be disabled", env="INSECURE")
HELP_FLAG = goflag.bool_flag("help, h", "show help")
VERSION_FLAG = goflag.bool_flag("version, v", "print the version")
GLOBAL_FLAGS: tuple[Flag, ...] = (NETMASTER_FLAG, INSECURE_FLAG, HELP_FLAG, VERSION_FLAG)
# Extension: also accept --netmaster/--insecure after the command.
_LEAF_EXTRA = (
    goflag.string_flag("netmaster", env=None, hidden=True),
    goflag.bool_flag("insecure", hidden=True),
)


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


def format_error(message: str, started: float) -> str:
    """logrus' text format (seconds since start), as Contiv's netctl printed
    errors, without the colour."""
    return "ERRO[%04d] %s\n" % (int(time.monotonic() - started), message.rstrip("\n"))


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
                 path: Sequence[Command], stdout: IO[str], stderr: IO[str],
                 stdin: IO[str], environ: Mapping[str, str]):
        self.global_flags = global_flags
        self.flags = flags
        self.args = list(args)
        self.path = list(path)
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        self.environ = environ
        self._client: Optional[ContivClient] = None

    @property
    def command(self) -> Command:
        return self.path[-1]

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
        if not (url.startswith("http://") or url.startswith("https://")):
            self.fail(EXIT_HELP, f"Error connecting to netmaster: invalid URL {url!r}: "
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


class App:
    """Runs one netctl invocation against a command table."""

    def __init__(self, commands: Sequence[Command], stdout: IO[str], stderr: IO[str],
                 stdin: IO[str], environ: Mapping[str, str]):
        # Contiv's main sorted the commands by name.
        self.commands = sorted(commands, key=lambda c: c.name)
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        self.environ = environ
        self.started = time.monotonic()

    def find(self, name: str) -> Optional[Command]:
        for command in self.commands:
            if command.has_name(name):
                return command
        return None

    def run(self, argv: Sequence[str]) -> int:
        path: list[Command] = []
        try:
            try:
                global_flags, args = goflag.parse_flags(GLOBAL_FLAGS, argv, self.environ)
            except FlagError as exc:
                self._usage_error(exc, self._app_help())
                return EXIT_HELP
            if global_flags.bool("help"):
                self.stdout.write(self._app_help())
                return EXIT_OK
            if global_flags.bool("version"):
                self.stdout.write(f"{APP_NAME} version \n{version_text(client_version())}\n")
                return EXIT_OK
            if not args:
                self.stdout.write(self._app_help())
                return EXIT_OK
            if args[0] in ("help", "h"):
                return self._help(args[1:2], None)
            command = self.find(args[0])
            if command is None:
                self.stderr.write(f"No help topic for '{args[0]}'\n")
                return EXIT_HELP
            path.append(command)
            rest = args[1:]
            if command.subcommands:
                try:
                    group_flags, rest = goflag.parse_flags((HELP_FLAG,), rest, self.environ)
                except FlagError as exc:
                    self._usage_error(exc, helptext.group_help(command))
                    return EXIT_HELP
                if group_flags.bool("help") or not rest:
                    self.stdout.write(helptext.group_help(command))
                    return EXIT_OK
                if rest[0] in ("help", "h"):
                    return self._help(rest[1:2], command)
                sub = command.find(rest[0])
                if sub is None:
                    self.stderr.write(f"No help topic for '{rest[0]}'\n")
                    return EXIT_HELP
                path.append(sub)
                rest = rest[1:]
            return self._run_leaf(path, global_flags, rest)
        except Exit as exc:
            if exc.message:
                self.stderr.write(format_error(exc.message, self.started))
            if exc.show_help and path:
                self.stdout.write(helptext.command_help(path))
            return exc.code
        except ClientError as exc:
            self.stderr.write(format_error(str(exc), self.started))
            return exc.exit_code

    def _run_leaf(self, path: list[Command], global_flags: FlagValues,
                  args: Sequence[str]) -> int:
        leaf = path[-1]
        flags = tuple(leaf.flags) + (HELP_FLAG,) + _LEAF_EXTRA
        try:
            values, positional = goflag.parse_leaf(flags, args, {})
        except FlagError as exc:
            self._usage_error(exc, helptext.command_help(path))
            return EXIT_HELP
        if values.bool("help"):
            self.stdout.write(helptext.command_help(path))
            return EXIT_OK
        ctx = Context(global_flags, values, positional, path, self.stdout, self.stderr,
                      self.stdin, self.environ)
        assert leaf.action is not None
        leaf.action(ctx)
        return EXIT_OK

    def _help(self, args: Sequence[str], group: Optional[Command]) -> int:
        if not args:
            text = self._app_help() if group is None else helptext.group_help(group)
            self.stdout.write(text)
            return EXIT_OK
        found = self.find(args[0]) if group is None else group.find(args[0])
        if found is None:
            self.stderr.write(f"No help topic for '{args[0]}'\n")
            return EXIT_HELP
        if found.subcommands:
            self.stdout.write(helptext.group_help(found))
        else:
            self.stdout.write(helptext.command_help([group, found] if group else [found]))
        return EXIT_OK

    def _app_help(self) -> str:
        return helptext.app_help(APP_NAME, APP_USAGE, self.commands, GLOBAL_FLAGS,
                                 version_text(client_version()))

    def _usage_error(self, exc: FlagError, help_text: str) -> None:
        self.stderr.write(f"Incorrect Usage: {exc}\n\n")
        self.stdout.write(help_text)


def run(argv: Sequence[str], stdout: Optional[IO[str]] = None, stderr: Optional[IO[str]] = None,
        stdin: Optional[IO[str]] = None, environ: Optional[Mapping[str, str]] = None) -> int:
    """Run netctl with ``argv`` (without the program name) and return the exit code."""
    from contiv_sdn.netctl.commands import COMMANDS
    app = App(COMMANDS, stdout or sys.stdout, stderr or sys.stderr, stdin or sys.stdin,
              os.environ if environ is None else environ)
    return app.run(argv)
