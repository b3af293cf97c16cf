"""``users add|remove|list``: the htpasswd file, local or in the bucket, through passlib."""

from __future__ import annotations

import argparse


def add_commands(commands: "argparse._SubParsersAction", parent: argparse.ArgumentParser) -> None:
    """To be filled in: users add, users remove, users list."""
