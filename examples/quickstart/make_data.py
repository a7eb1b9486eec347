"""Write the quickstart data sets next to this script (deterministic, standard library only).

The task is a Caesar shift by one letter: ``shift: hello = `` -> ``ifmmp`` (z wraps to a). The tiny
demo model was pretrained on copying words and on the alphabet order but never on shifting, so it
scores ~0 before tuning and a LoRA adapter can learn the task in a few dozen steps.
``forget_copy.jsonl`` holds the pretraining copy task on unseen words, to measure forgetting.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

SEED = 20240607
SPLITS = {"train": 640, "validation": 80, "test": 200, "forget_copy": 160}


def shift(word: str) -> str:
    """Caesar shift of a lowercase word by one letter."""
    letters = string.ascii_lowercase
    return "".join(letters[(letters.index(char) + 1) % 26] for char in word)


def unique_words(rng: random.Random, count: int) -> list[str]:
    """Distinct random lowercase words of 3 to 8 letters, so no word appears in two splits."""
    words: dict[str, None] = {}  # insertion-ordered set keeps the output deterministic
    while len(words) < count:
        words["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8)))] = None
    return list(words)


def main() -> None:
    rng = random.Random(SEED)
    words = unique_words(rng, sum(SPLITS.values()))
    here = Path(__file__).resolve().parent
    start = 0
    for split, count in SPLITS.items():
        task, answer = ("copy", str) if split == "forget_copy" else ("shift", shift)
        rows = [
            {"id": f"{split}-{i:04d}", "prompt": f"{task}: {word} = ", "completion": answer(word)}
            for i, word in enumerate(words[start : start + count])
        ]
        start += count
        with (here / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()
