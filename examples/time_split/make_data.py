"""Write rows.jsonl: the quickstart's shift task with a `created` time per row (one row about every 3 hours
from 2024-01-01, in shuffled file order), for the time-based validation example."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hpo_action.init import demo_data


def main() -> None:
    rows = [json.loads(line) for split in ("train", "validation", "test") for line in demo_data()[split].splitlines()]
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for hours, row in enumerate(rows):
        row["created"] = (start + timedelta(hours=3 * hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
    random.Random(0).shuffle(rows)  # the file's order is not the time order: the split sorts by `created`
    text = "".join(json.dumps(row) + "\n" for row in rows)
    (Path(__file__).resolve().parent / "rows.jsonl").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
