"""netctl's command dispatch: global flags, command groups, leaf commands.

This reproduces how codegangsta/cli ran Contiv's netctl: global flags
(``--netmaster``, ``--insecure``, ``-h``, ``-v``) come before the command;
a group (``network``, ``policy``...) takes only ``-h``; a leaf command parses
its own flags, which may follow its positional arguments (see goflag).
Failures become an exit code, not a traceback: 0 ok, 1 usage/help,
2 netmaster unreachable, 3 error answer or invalid input, 4 local I/O.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Mapping, Optional, Sequence

from contiv_sdn.netctl import goflag
from contiv_sdn.netctl import help as helptext
from contiv_sdn.netctl.client import ClientError
from contiv_sdn.netctl.commands import COMMANDS
from contiv_sdn.netctl.context import (EXIT_HELP, EXIT_OK, Command, Context, Exit,
                                       client_version, version_text)
from contiv_sdn.netctl.goflag import Flag, FlagError, FlagValues

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


def format_error(message: str, started: float) -> str:
    """logrus' text format (seconds since start), as Contiv's netctl printed
    errors, without the colour."""
    return "ERRO[%04d] %s\n" % (int(time.monotonic() - started), message.rstrip("\n"))


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
        ctx = Context(global_flags, values, positional, self.stdout, self.stderr, self.stdin,
                      self.environ)
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
    app = App(COMMANDS, stdout or sys.stdout, stderr or sys.stderr, stdin or sys.stdin,
              os.environ if environ is None else environ)
    return app.run(argv)
