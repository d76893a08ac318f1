"""`type: procedural` sources: generated documents as an ordinary data source of `pretrainlab prepare`.

    sources:
      - {type: procedural, domain: dyck, generator: dyck, documents: 20000, seed: 0,
         options: {k: 4, max_depth: 8, min_length: 64, max_length: 128}}

Document i is `generator.document(i)` (a pure function of the seed and i), so the corpus, its validation
split (hashed from the document's index) and the manifest's sha256 of the generated text are the same on
every machine. The manifest records the generated text as one pseudo-file
`<procedural:NAME seed S>` with its sha256 and size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from pretrainlab.config import ProceduralSource
from pretrainlab.data.diagnostics import Diagnostics
from pretrainlab.data.procedural.registry import build_generator
from pretrainlab.data.sources import Document, FileRecord, FileRef, Source


class ProceduralDocumentsSource(Source):
    """`cfg.documents` documents of a registered generator; bad options fail here, before any work."""

    def __init__(self, cfg: ProceduralSource, index: int) -> None:
        super().__init__(cfg, index)
        self.n_documents = cfg.documents
        self.generator = build_generator(cfg.generator, cfg.options, cfg.seed, where=f"sources.{index}.options")
        self.ref = FileRef(display=f"<procedural:{cfg.generator} seed {cfg.seed}>",
                           rel=f"procedural/{cfg.generator}/{cfg.seed}")
        self.files = [self.ref]

    def describe(self) -> str:
        return f"sources[{self.index}] (procedural {self.cfg.generator}, domain {self.domain!r})"  # type: ignore[union-attr]

    def documents(self, diag: Diagnostics) -> Iterator[Document]:
        self.records = []
        digest, n_bytes = hashlib.sha256(), 0
        try:
            for i, text in enumerate(self.generator.documents(0, self.n_documents)):
                data = text.encode("utf-8")
                digest.update(len(data).to_bytes(8, "little") + data)  # length-prefixed: documents stay apart
                n_bytes += len(data)
                yield Document(text, self.ref, i)
        finally:  # also when the reader stops early (max_documents): the record covers what was generated
            self.records.append(FileRecord(self.ref.display, digest.hexdigest(), n_bytes))
