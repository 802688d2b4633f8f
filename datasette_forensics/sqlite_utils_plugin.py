"""sqlite-utils plugin: `sqlite-utils import-logs` and `sqlite-utils import-records`."""

import sqlite_utils

from . import cli as forensics_cli


@sqlite_utils.hookimpl
def register_commands(cli):
    """Add the forensic import commands to sqlite-utils (same implementation as our CLI)."""
    for name in ("import-logs", "import-records"):
        command = forensics_cli.cli.commands.get(name)
        if command is not None:
            cli.add_command(command, name=name)
