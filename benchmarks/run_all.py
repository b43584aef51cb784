"""`make bench`: run the quick benchmark scripts, keep their raw rows, and regenerate BENCHMARKS.md from them.

The quick ones (minutes each) run here with their default settings; the long ones (tens of minutes to hours
of CPU: see LONG) are run by hand with the commands
BENCHMARKS.md names, and their rows are regenerated into it the same way (`python benchmarks/tables.py`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

QUICK = ["harness_overhead.py", "trainer_overhead.py", "fusion.py", "demo.py", "ddp.py", "shared_study.py"]
LONG = ["cifar_pretrained.py", "pruning_cifar.py", "quantization.py", "runtimes.py", "clinc150.py", "distill_cifar.py",
        "hpo.py", "install_time.py", "optimize.py", "vocabulary.py",
        "batch_readings.py"]


def main() -> int:
    here = Path(__file__).parent
    failed = []
    for script in QUICK:
        print(f"\n## {script}\n", flush=True)
        if subprocess.call([sys.executable, str(here / script)], cwd=here) != 0:
            failed.append(script)
    if subprocess.call([sys.executable, str(here / "tables.py")], cwd=here) != 0:
        failed.append("tables.py")
    print(f"\nNot run here (long; run by hand as BENCHMARKS.md shows): {', '.join(LONG)}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
