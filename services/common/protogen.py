"""Generates the Python gRPC code from protos/peftlab/v1/*.proto (`make proto`), or checks it is current.

The generated modules sit next to their .proto files, so the proto package `peftlab.v1` is also the Python
package and generated imports (`from peftlab.v1 import common_pb2`) need no fix-ups.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2] / "protos"
SOURCES = "peftlab/v1"


def generate(out_dir: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / SOURCES).glob("*.proto"))
    if not protos:
        return
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generated_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / SOURCES).glob("*_pb2*.py*")}


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        (fresh / SOURCES).mkdir(parents=True)
        generate(fresh)
        want, have = generated_files(fresh), generated_files(ROOT)
        stale = sorted(want ^ have) + sorted(
            f for f in want & have if not filecmp.cmp(fresh / f, ROOT / f, shallow=False)
        )
    if stale:
        print(
            "generated proto code is stale; run `make proto` and commit:", *stale, sep="\n  ", file=sys.stderr
        )
        return 1
    print(f"generated proto code is current ({len(want)} files)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed generated code is stale")
    args = parser.parse_args()
    if args.check:
        return check()
    generate(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
