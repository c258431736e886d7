"""Demo Python-callable asset: arcod runs `jobs.sales:build` in a worker process."""

import json
import os
import time
from pathlib import Path


def build() -> None:
    here = Path(__file__).resolve().parent.parent
    asset = os.environ["ARCOD_ASSET"]
    partition = os.environ.get("ARCOD_PARTITION_KEY")
    time.sleep(float(os.environ.get("ARCOD_DEMO_SLEEP", "0.2")))
    if (here / "fail" / asset.replace("/", "__")).exists():
        raise RuntimeError(f"{asset}: failing on purpose")
    out = here / "data" / asset / f"{partition or '_'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"asset": asset, "partition": partition, "run_id": os.environ["ARCOD_RUN_ID"]}))
    print(f"built {asset} {partition or ''}")
