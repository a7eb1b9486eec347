"""Replay: rows of the skills to keep, read like data.train, kept apart from every evaluation set, and mixed
into the training batches at a share (`replay_ratio`) that the search may tune.

The mix is an explicit order of rows, drawn once per trial from the training seed: each row slot of the trial is a
replay row with probability `replay_ratio` (so a batch's replay share is binomial around it), the replay source
is drawn by weight, and train and each source are walked in seeded shuffles, reshuffled when used up.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from hpo_action.data.loading import ReplaySet, canonical_json
from hpo_action.data.rows import Rows
from hpo_action.errors import DataError

if TYPE_CHECKING:
    import datasets

REPLAY_COLUMN = "replay"  # 1 on replay rows, 0 on train rows: the KL term is taken on the flagged rows


def check_held_out(replay: tuple[ReplaySet, ...], held_out: dict[str, tuple[str, Rows]]) -> None:
    """Refuse replay rows that are also evaluation rows (same id, or the same content): trained on, they would
    leak into the gate. `held_out` maps a role ('gate.forgetting[copy]') to (its file, its rows)."""
    for replay_set in replay:
        ids = {str(row["id"]): row for row in replay_set.rows}
        texts = {row_text(row): row for row in replay_set.rows}
        for role, (origin, rows) in held_out.items():
            for row in rows:
                if str(row["id"]) in ids:
                    what = f"id {row['id']!r}"
                elif row_text(row) in texts:
                    what = f"row {texts[row_text(row)]['id']!r} (same text as {row['id']!r})"
                else:
                    continue
                raise DataError(
                    f"{replay_set.key}: {replay_set.source}: {what} is also in {role} ({origin}); replay data "
                    "must not be evaluation data, or it leaks into the gate (if the ids are per-file row numbers, "
                    "make them unique across files)"
                )


def row_text(row: dict[str, Any]) -> str:
    """What of a row reaches the model, to compare across files: its prompt and completion (a chat: the earlier
    turns and the last one; text: the whole), whitespace collapsed. Other fields (a `source` tag, a note) never
    reach the model, so they cannot make a copied evaluation row a different row; nor can the format it is in."""
    if "messages" in row:
        turns = [str(message["content"]) for message in row["messages"]]
        prompt, completion = " ".join(turns[:-1]), turns[-1]
    elif "text" in row:
        prompt, completion = "", str(row["text"])
    else:
        prompt, completion = str(row["prompt"]), str(row["completion"])
    return canonical_json([" ".join(prompt.split()), " ".join(completion.split())])


def mixed_order(
    n_train: int, replay_sizes: list[int], weights: list[float], ratio: float, n_rows: int, seed: int
) -> list[tuple[int, int]]:
    """`n_rows` (source, row) pairs in training order; source 0 is train, source i > 0 is replay set i - 1."""
    rng = random.Random(seed)
    walkers = [_Walker(size, rng) for size in (n_train, *replay_sizes)]
    total = sum(weights)
    order = []
    for _ in range(n_rows):
        source = 0
        if replay_sizes and rng.random() < ratio:
            source = 1 + _draw(rng, [w / total for w in weights])
        order.append((source, walkers[source].next()))
    return order


def mix(
    train: datasets.Dataset,
    replay: list[datasets.Dataset],
    weights: list[float],
    ratio: float,
    n_rows: int,
    seed: int,
) -> datasets.Dataset:
    """The trial's training rows in order, with the replay flag column; read sequentially by the trainer."""
    import datasets

    columns = ["input_ids", "labels"]
    parts = [
        part.select_columns(columns).add_column(REPLAY_COLUMN, [int(i > 0)] * len(part))
        for i, part in enumerate([train, *replay])
    ]
    offsets = [0]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + len(part))
    order = mixed_order(len(train), [len(r) for r in replay], weights, ratio, n_rows, seed)
    joined = datasets.concatenate_datasets(parts)
    return joined.select([offsets[source] + row for source, row in order])


class _Walker:
    """Rows of one source in a seeded shuffle, reshuffled each time it is used up."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size, self.rng = size, rng
        self.queue: list[int] = []

    def next(self) -> int:
        if not self.queue:
            self.queue = list(range(self.size))
            self.rng.shuffle(self.queue)
        return self.queue.pop()


def _draw(rng: random.Random, shares: list[float]) -> int:
    point, cumulative = rng.random(), 0.0
    for index, share in enumerate(shares):
        cumulative += share
        if point < cumulative:
            return index
    return len(shares) - 1
