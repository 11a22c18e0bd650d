"""`python -m rar_tools.release write | validate | pack [--out DIR]`, from a source checkout.

- write: regenerate `bundle/manifest.json` and `server.json` from the code;
- validate: check the committed manifest with `mcpb validate`;
- pack: build `DIR/rar-tools-VERSION.mcpb` (default `dist/`) with `mcpb pack`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rar_tools.errors import RarToolsError
from rar_tools.release.bundle import MANIFEST_FILE, SOURCE_ROOT, mcpb, pack_bundle, source_checkout, write_generated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rar_tools.release", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["write", "validate", "pack"])
    parser.add_argument("--out", type=Path, default=SOURCE_ROOT / "dist", help="folder for the packed bundle")
    args = parser.parse_args(argv)
    try:
        root = source_checkout()
        if args.action == "write":
            for path in write_generated(root):
                print(f"wrote {path}")
        elif args.action == "validate":
            print(mcpb("validate", str(root / MANIFEST_FILE)).stdout, end="")
        else:
            print(f"packed {pack_bundle(args.out, root)}")
    except RarToolsError as exc:
        print(f"rar_tools.release: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
