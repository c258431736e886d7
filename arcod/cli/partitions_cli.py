"""`arcod partitions list|add|remove`."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    pass


COMMANDS: dict = {}
