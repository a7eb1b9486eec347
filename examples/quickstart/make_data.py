"""Write the quickstart data sets next to this script (deterministic; the generator ships in the package).

The task is a Caesar shift by one letter: ``shift: hello = `` -> ``ifmmp`` (z wraps to a). The tiny
demo model was pretrained on copying words and on the alphabet order but never on shifting, so it
scores ~0 before tuning and a LoRA adapter can learn the task in a few dozen steps.
``forget_copy.jsonl`` holds the pretraining copy task on unseen words, to measure forgetting.
`hpo-action init` writes the same files into a new project's data/ folder.
"""

from __future__ import annotations

from pathlib import Path

from hpo_action.init import demo_data


def main() -> None:
    here = Path(__file__).resolve().parent
    for split, text in demo_data().items():
        (here / f"{split}.jsonl").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
