"""`make bench`: run every benchmark script in turn and print its markdown table (copy into BENCHMARKS.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = ["harness_overhead.py", "trainer_overhead.py", "cifar_pretrained.py", "fusion.py"]


def main() -> int:
    here = Path(__file__).parent
    failed = []
    for script in SCRIPTS:
        print(f"\n## {script}\n", flush=True)
        if subprocess.call([sys.executable, str(here / script)]) != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
