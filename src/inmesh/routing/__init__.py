"""Outbound HTTP routing core (sans I/O): VirtualService matching and route decisions.

:mod:`.fault` (fault injection draws) and :mod:`.cors` (the CORS filter) are
imported on their own, by routes that use them.
"""

from .match import CompiledMatch, RequestAttrs, compile_match, compile_string_match, parse_query
from .router import (
    DEFAULT_ROUTE_NAME,
    ORIGINAL_PATH_HEADER,
    HeaderMutation,
    NoRoute,
    RandomSource,
    RouteDecision,
    RouteKind,
    RouteTable,
    WeightedDestination,
    expand_host,
)

__all__ = [
    "DEFAULT_ROUTE_NAME",
    "ORIGINAL_PATH_HEADER",
    "CompiledMatch",
    "HeaderMutation",
    "NoRoute",
    "RandomSource",
    "RequestAttrs",
    "RouteDecision",
    "RouteKind",
    "RouteTable",
    "WeightedDestination",
    "compile_match",
    "compile_string_match",
    "expand_host",
    "parse_query",
]
