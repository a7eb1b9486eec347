"""A user-defined metric, as a user would write it in their own module (README, "Metrics")."""

from __future__ import annotations


class ContainsAnswer:
    """Right when the expected completion appears anywhere in the model's output (a lenient exact match)."""

    name = "contains_answer"
    kind = "boolean"
    direction = "maximize"
    needs_prompt = True

    def score(self, batch):  # type: ignore[no-untyped-def]
        return [ref.strip() in out for out, ref in zip(batch.outputs(), batch.references(), strict=True)]


class OutputLength:
    """The number of characters generated (a score; shorter is better here)."""

    name = "output_length"
    kind = "score"
    direction = "minimize"
    needs_prompt = True

    def score(self, batch):  # type: ignore[no-untyped-def]
        return [float(len(out)) for out in batch.outputs()]


class NotAMetric:
    name = "broken"
