"""``cuelog keygen``: make the show key that admits nodes and tools to a controller."""

from __future__ import annotations

import argparse
from typing import Any

from replicas.showkey import generate


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "keygen",
        help="make a show key (TLS) for a controller and its nodes",
        description="Write a new show key to FILE (readable by its owner only): a certificate "
        "and its private key. Copy the file to every machine of the show and start the "
        "controller, every node and every tool with --key FILE (or CUELOG_KEY=FILE): they then "
        "speak TLS, and a machine without the key can neither read the show nor submit.",
    )
    parser.add_argument("file", metavar="FILE", help="where to write the key")
    parser.add_argument(
        "--force", action="store_true", help="replace FILE if it exists (every copy must go)"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    key = generate(args.file, force=args.force)
    print(f"show key {key.fingerprint} written to {key.path}")
    print(f"copy it to every machine of the show, then start each with --key {key.path}")
    return 0
