"""Help screens in the layout codegangsta/cli gave Contiv's netctl.

Users of Contiv know these screens (NAME / USAGE / COMMANDS / OPTIONS, flags
shown as ``--tenant, -t "default"``), so they are rendered from the same
templates, aligned by the same tab-padding tabwriter.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from contiv_sdn.netctl.goflag import BOOL, INT, SLICE, Flag
from contiv_sdn.netctl.tabwriter import tabwrite

PROG = "netctl"


def _render(text: str) -> str:
    return tabwrite(text, minwidth=0, tabwidth=8, padding=1, padchar="\t")


def _prefixed(names: Sequence[str]) -> str:
    return ", ".join(("-" if len(n) == 1 else "--") + n for n in names)


def flag_help(flag: Flag) -> str:
    """One OPTIONS line, formatted as codegangsta's Flag.String()."""
    names = _prefixed(flag.names)
    if flag.kind == BOOL:
        line = f"{names}\t{flag.usage}"
    elif flag.kind == INT:
        line = f'{names} "{flag.default or 0}"\t{flag.usage}'
    elif flag.kind == SLICE:
        first = flag.names[0]
        opt = ("-" if len(first) == 1 else "--") + first
        line = f"{names} [{opt} option {opt} option]\t{flag.usage}"
    elif flag.default:
        line = f'{names} "{flag.default}"\t{flag.usage}'
    else:
        line = f"{names} \t{flag.usage}"
    if flag.env:
        line += f" [${flag.env}]"
    return line


def _flag_lines(flags: Iterable[Flag]) -> str:
    return "".join(f"   {flag_help(f)}\n" for f in flags if not f.hidden)


def _command_lines(commands: Iterable[Any]) -> str:
    return "".join(f"   {', '.join(c.names)}\t{c.usage}\n" for c in commands)


_HELP_ENTRY = "   help, h\tShows a list of commands or help for one command\n"


def app_help(prog: str, usage: str, commands: Sequence[Any], global_flags: Sequence[Flag],
             version: str) -> str:
    """The screen of ``netctl``, ``netctl -h`` and ``netctl help``."""
    text = (f"NAME:\n   {prog} - {usage}\n\n"
            f"USAGE:\n   {prog} [global options] command [command options] [arguments...]\n\n"
            "VERSION:\n" + "".join(f"   {line}\n" for line in version.splitlines()) + "\n"
            "COMMANDS:\n" + _command_lines(commands) + _HELP_ENTRY + "\n"
            "GLOBAL OPTIONS:\n" + _flag_lines(global_flags))
    return _render(text)


def group_help(group: Any) -> str:
    """The screen of a command group, e.g. ``netctl network``."""
    text = (f"NAME:\n   {PROG} {group.name} - {group.usage}\n\n"
            f"USAGE:\n   {PROG} {group.name} command [command options] [arguments...]\n\n"
            "COMMANDS:\n" + _command_lines(group.subcommands) + _HELP_ENTRY + "\n"
            "OPTIONS:\n   --help, -h\tshow help\n")
    return _render(text)


def command_help(path: Sequence[Any]) -> str:
    """The screen of a leaf command, e.g. ``netctl network create -h``."""
    leaf = path[-1]
    full = " ".join([PROG] + [c.name for c in path])
    visible = [f for f in leaf.flags if not f.hidden]
    # codegangsta: no ArgsUsage means "[arguments...]"; " " means none.
    args_usage = leaf.args_usage.strip() if leaf.args_usage else "[arguments...]"
    usage_line = full + (" [command options]" if visible else "")
    if args_usage:
        usage_line += " " + args_usage
    text = (f"NAME:\n   {full} - {leaf.usage}\n\n"
            f"USAGE:\n   {usage_line}\n")
    if visible:
        text += "\nOPTIONS:\n" + _flag_lines(visible)
    return _render(text)
