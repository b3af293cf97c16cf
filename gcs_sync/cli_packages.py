"""Commands that move and compare packages: status, pull, push, verify."""

from __future__ import annotations

import argparse


def add_commands(commands: "argparse._SubParsersAction", parent: argparse.ArgumentParser) -> None:
    """To be filled in: status, pull, push, verify."""
