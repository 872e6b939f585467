"""``python -m benchmarks``: run every ``benchmarks/bench_*.py`` module's ``main()`` in turn,
each with its default arguments."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main() -> None:
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        name = f"benchmarks.{path.stem}"
        sys.argv = [f"python -m {name}"]  # defaults: argparse in each main() sees no options
        importlib.import_module(name).main()


if __name__ == "__main__":
    main()
