"""The `preselect` prepare filter: keep the documents a trained PreSelect classifier scores highest.

    filters:
      - name: preselect
        options: {classifier: preselect/classifier.npz, keep_fraction: 0.1}   # or threshold: 0.83

`prepare` scores documents one at a time, so "the top 10%" cannot be cut from the corpus at hand; the
threshold comes from the score quantiles the classifier saved of its training population (every document
`pretrainlab preselect score` scored), by documents or, with `by: bytes`, by bytes (the paper keeps 10% of
characters). On a corpus like that population, about `keep_fraction` survives; `pretrainlab preselect select`
cuts the exact fraction of a given corpus instead. Removed documents are counted under the reason
"preselect". Shum et al. 2025, arXiv 2503.00808; recipes/preselect.py.
"""

from __future__ import annotations

from pathlib import Path

from pretrainlab.data.filters.base import DocumentFilter, FilterOptionError, check_range
from pretrainlab.data.filters.registry import register_filter
from pretrainlab.errors import PretrainlabError


@register_filter("preselect")
class PreselectFilter(DocumentFilter):
    """Remove documents whose PreSelect score is below the threshold (`threshold`, or the one that keeps
    `keep_fraction` of the classifier's training population by `by`: documents or bytes)."""

    def __init__(self, classifier: str, keep_fraction: float | None = None, threshold: float | None = None,
                 by: str = "documents") -> None:
        from pretrainlab.recipes.preselect_classifier import KEEP_BY, PreselectClassifier

        if (keep_fraction is None) == (threshold is None):
            raise FilterOptionError("keep_fraction", "give either keep_fraction or threshold (exactly one)")
        if by not in KEEP_BY:
            raise FilterOptionError("by", f"must be one of {', '.join(KEEP_BY)} (got {by!r})")
        if not isinstance(classifier, str) or not classifier:
            raise FilterOptionError("classifier", f"must be the path of a classifier .npz (got {classifier!r})")
        try:
            self.classifier = PreselectClassifier.load(Path(classifier))
        except PretrainlabError as e:
            raise FilterOptionError("classifier", e.message) from None
        if keep_fraction is not None:
            check_range("keep_fraction", keep_fraction, 0.0, 1.0)
            if keep_fraction == 0:
                raise FilterOptionError("keep_fraction", "must be > 0 (0 would remove every document)")
            self.threshold = self.classifier.threshold(float(keep_fraction), by)
        else:
            check_range("threshold", threshold, 0.0, 1.0)
            self.threshold = float(threshold)  # type: ignore[arg-type]

    def reason(self, text: str) -> str | None:
        return None if self.classifier.score_one(text) >= self.threshold else "preselect"
