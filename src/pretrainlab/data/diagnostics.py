"""What went wrong with the input, without stopping the run: bad JSONL lines, invalid UTF-8, empty documents.

Skippable problems are counted per domain (they go into the manifest) and summarised as warnings at the
end, with a few `file:line` examples each; `strict=True` turns a bad line into a fatal `DataError`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from pretrainlab.errors import DataError

EXAMPLES_PER_FILE = 3


@dataclass
class _FileProblems:
    count: int = 0
    examples: list[str] = field(default_factory=list)


class Diagnostics:
    """Collects skippable input problems per domain and per file; raises on them when `strict`."""

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.skipped_empty: Counter[str] = Counter()
        self.bad_lines: Counter[str] = Counter()
        self.invalid_utf8_documents: Counter[str] = Counter()
        self._bad_by_file: dict[str, _FileProblems] = defaultdict(_FileProblems)
        self._utf8_by_file: dict[str, int] = {}
        self._notes: list[str] = []

    def bad_line(self, domain: str, file: str, line: int, reason: str) -> None:
        """A record that cannot be used (`file:line: reason`): skipped and counted, or fatal when strict."""
        where = f"{file}:{line}"
        if self.strict:
            raise DataError(
                f"{where}: {reason}",
                hint="fix or remove that line, or set strict=false to skip bad lines with a warning",
            )
        self.bad_lines[domain] += 1
        problems = self._bad_by_file[file]
        problems.count += 1
        if len(problems.examples) < EXAMPLES_PER_FILE:
            problems.examples.append(f"{where}: {reason}")

    def invalid_utf8(self, domain: str, file: str, n_errors: int, n_documents: int) -> None:
        """`file` had `n_errors` invalid UTF-8 sequences (replaced by U+FFFD) in `n_documents` documents."""
        self._utf8_by_file[file] = self._utf8_by_file.get(file, 0) + n_errors
        self.invalid_utf8_documents[domain] += n_documents

    def empty_document(self, domain: str) -> None:
        self.skipped_empty[domain] += 1

    def note(self, message: str) -> None:
        """Any other warning worth showing at the end."""
        self._notes.append(message)

    def warnings(self) -> list[str]:
        """Human-readable warnings, one per file or problem, in the order they were met."""
        out: list[str] = []
        for file, problems in self._bad_by_file.items():
            lines = "; ".join(problems.examples)
            more = f" (and {problems.count - len(problems.examples)} more)" if problems.count > len(problems.examples) else ""
            out.append(f"{file}: skipped {problems.count} bad line(s): {lines}{more}")
        for file, n in self._utf8_by_file.items():
            out.append(
                f"{file}: {n} invalid UTF-8 sequence(s), replaced by U+FFFD "
                "(re-encode the file as UTF-8 if this is not expected)"
            )
        out.extend(self._notes)
        return out
