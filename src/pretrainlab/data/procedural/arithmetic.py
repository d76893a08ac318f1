"""Modular arithmetic: `a op b mod p = c`, the grokking tasks as text (Power et al. 2022) and a procedural
data type in the spirit of Procedural Pretraining's algorithmic transforms.

A document holds `per_document` equations, one a line: `17 + 85 mod 97 = 5`. Operands are uniform in
0..p-1; `/` is multiplication by the inverse (b != 0), so it needs a prime modulus.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from pretrainlab.config import StrictModel
from pretrainlab.data.procedural.registry import Generator, register_generator

Operation = Literal["+", "-", "*", "/"]


class ModularOptions(StrictModel):
    modulus: int = Field(default=97, ge=2)
    operations: list[Operation] = Field(default_factory=lambda: ["+", "-", "*"], min_length=1)
    per_document: int = Field(default=8, ge=1, description="Equations per document, one a line.")

    @model_validator(mode="after")
    def _division_needs_a_prime(self) -> "ModularOptions":
        if "/" in self.operations and not is_prime(self.modulus):
            raise ValueError(f"'/' needs a prime modulus (every b != 0 invertible); {self.modulus} is not prime")
        return self


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def modular_result(a: int, op: str, b: int, p: int) -> int:
    """a op b mod p (`/`: a times the inverse of b)."""
    if op == "+":
        return (a + b) % p
    if op == "-":
        return (a - b) % p
    if op == "*":
        return (a * b) % p
    return (a * pow(b, -1, p)) % p


@register_generator("modular_arithmetic")
class ModularArithmetic(Generator):
    """`a op b mod p = c` equations (see the module docstring)."""

    Options = ModularOptions

    def sample(self, rng: np.random.Generator) -> str:
        o: ModularOptions = self.options  # type: ignore[assignment]
        p = o.modulus
        lines = []
        for _ in range(o.per_document):
            op = o.operations[int(rng.integers(0, len(o.operations)))]
            a = int(rng.integers(0, p))
            b = int(rng.integers(1 if op == "/" else 0, p))
            lines.append(f"{a} {op} {b} mod {p} = {modular_result(a, op, b, p)}")
        return "\n".join(lines)
