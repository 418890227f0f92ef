"""``python -m driftloop.annotations [files…]``: check the shipped manifests' keys."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from driftloop.annotations.check import check_files, default_files
from driftloop.annotations.vocabulary import Catalogue


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m driftloop.annotations")
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--sources", type=Path, default=None, help="default: the cache's")
    args = parser.parse_args(argv)
    if args.sources is None:
        from driftloop.settings import Settings

        args.sources = Settings().cache_dir / "schemas" / "annotations"
    cat = Catalogue.load(args.sources)
    files = args.files or default_files()
    errors = check_files(files, cat)
    for e in errors:
        print(e)
    print(f"{len(files)} files, {len(cat.keys)} upstream keys, {len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(_main())
