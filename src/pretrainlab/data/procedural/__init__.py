"""Procedural data (Procedural Pretraining, Jiang, Shinnick et al., ICML 2026, arXiv 2601.21725):
generated documents with structure and no meaning, used as a warm-up before natural text.

- `registry.py`: the generator registry, options validated per generator, document i = f(seed, i);
- `dyck.py`: `dyck`, `shuffled_dyck` (and the shuffled-token control); `sequences.py`: `copy`, `reverse`,
  `sort`, `set_ops`; `arithmetic.py`: `modular_arithmetic`; `formal.py`: `anbn`, `regular` (random DFA);
  `haystack.py`: generated filler sentences (`haystack`), also the needle evaluation's filler;
- `source.py`: the `type: procedural` source of `pretrainlab prepare`.

See docs/procedural.md.
"""

from pretrainlab.data.procedural.registry import (
    GENERATORS,
    Generator,
    build_generator,
    document_rng,
    load_builtin_generators,
    register_generator,
)

__all__ = ["GENERATORS", "Generator", "build_generator", "document_rng", "load_builtin_generators",
           "register_generator"]
