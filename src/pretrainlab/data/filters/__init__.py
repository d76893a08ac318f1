"""Document filters for `prepare`: the interface (base), the registry, the chain and the built-in filters."""

from pretrainlab.data.filters.base import DocumentFilter, FilterOptionError, check_range
from pretrainlab.data.filters.registry import FILTERS, build_filter, load_builtin_filters, register_filter

__all__ = [
    "DocumentFilter", "FilterOptionError", "check_range", "FILTERS", "build_filter", "load_builtin_filters",
    "register_filter",
]
