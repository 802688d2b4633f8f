"""sqlite-utils plugin: `sqlite-utils import-logs` and `sqlite-utils import-records`."""

import copy

import sqlite_utils

from . import cli as forensics_cli


@sqlite_utils.hookimpl
def register_commands(cli):
    """Add the forensic import commands to sqlite-utils (same implementation as our CLI)."""
    for name in ("import-logs", "import-records"):
        command = forensics_cli.cli.commands.get(name)
        if command is not None:
            cli.add_command(as_sqlite_utils_command(command), name=name)


def as_sqlite_utils_command(command):
    """The same command, its help examples naming the command they are shown under."""
    command = copy.copy(command)
    command.help = (command.help or "").replace("datasette-forensics ", "sqlite-utils ")
    return command
