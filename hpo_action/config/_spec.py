"""The ground every config section stands on: the strict base section, a searched parameter's spec, and the
"did you mean" hint of every unknown-name error."""

from __future__ import annotations

import difflib
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Method = Literal["lora", "qlora", "full"]


def did_you_mean(name: str, options: Any) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ParamSpec(_Section):
    """One search dimension: float/int range, categorical choices, or a fixed value."""

    type: Literal["float", "int", "categorical", "fixed"] | None = Field(
        None, description="Inferred from the keys: low/high (int when both are ints), choices, or a bare value."
    )
    low: float | None = Field(None, description="Lower end of a range.")
    high: float | None = Field(None, description="Upper end of a range.")
    log: bool = Field(False, description="Sample the range on a log scale (needs low > 0).")
    step: float | None = Field(None, description="Grid step of a range (a whole number for an int parameter).")
    choices: list[Any] | None = Field(None, description="The values of a categorical parameter.")
    value: Any = Field(None, description="A fixed value (the same in every trial).")
    methods: list[Method] | None = Field(None, description="Methods this parameter applies to; all when unset.")

    @model_validator(mode="before")
    @classmethod
    def _infer_type(cls, data: Any) -> Any:
        """A bare scalar is a fixed value; otherwise infer the type from the keys given (ints stay ints)."""
        if not isinstance(data, dict):
            return {"type": "fixed", "value": data}
        if data.get("type") is None:
            bounds = [data.get("low"), data.get("high")]
            if "choices" in data:
                kind = "categorical"
            elif any(b is not None for b in bounds):
                ints = all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
                kind = "int" if ints and not data.get("log") else "float"
            else:
                kind = "fixed"
            data = {**data, "type": kind}
        return data

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type in ("float", "int"):
            if self.low is None or self.high is None:
                raise ValueError(f"a {self.type} parameter needs both low and high")
            if not (math.isfinite(self.low) and math.isfinite(self.high)):
                raise ValueError("bounds must be finite numbers")
            if self.low > self.high:
                raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError("log: true needs low > 0")
            if self.log and self.step is not None:
                raise ValueError("log and step cannot be combined")
            if self.step is not None and (self.step <= 0 or (self.type == "int" and self.step != int(self.step))):
                raise ValueError(f"step must be {'a whole number ' if self.type == 'int' else ''}> 0 (got {self.step})")
        if self.type == "categorical" and not self.choices:
            raise ValueError("a categorical parameter needs a non-empty 'choices' list")
        return self
