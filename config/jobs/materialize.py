"""Demo job: materialise the asset arcod names in the environment by writing a JSON file.

It reads its context from ARCOD_* variables, sleeps a little to look like work
(ARCOD_DEMO_SLEEP seconds, default 0.2), and fails on purpose when config/fail/<asset> exists
(asset key with / replaced by __), so the README can show failures and reruns.
"""

import json
import os
import sys
import time
from pathlib import Path

here = Path(__file__).resolve().parent.parent
asset = os.environ["ARCOD_ASSET"]
partition = os.environ.get("ARCOD_PARTITION_KEY")
attempt = os.environ.get("ARCOD_ATTEMPT")
time.sleep(float(os.environ.get("ARCOD_DEMO_SLEEP", "0.2")))

if (here / "fail" / asset.replace("/", "__")).exists():
    print(f"{asset}: failing on purpose (remove config/fail/{asset.replace('/', '__')} to fix)", file=sys.stderr)
    sys.exit(1)

out = here / "data" / asset / f"{partition or '_'}.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({
    "asset": asset,
    "partition": partition,
    "window": [os.environ.get("ARCOD_PARTITION_START"), os.environ.get("ARCOD_PARTITION_END")],
    "run_id": os.environ["ARCOD_RUN_ID"],
    "attempt": attempt,
}))
print(f"wrote {out.relative_to(here)} (attempt {attempt})")
