"""Route matches: path, headers, query, method."""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from extproc.config.base import Strict

# --- matches -------------------------------------------------------------


class PathMatch(Strict):
    exact: str | None = None
    path_prefix: str | None = Field(None, alias="pathPrefix")
    regex: str | None = None

    @model_validator(mode="after")
    def _one(self) -> PathMatch:
        if sum(v is not None for v in (self.exact, self.path_prefix, self.regex)) != 1:
            raise ValueError("set exactly one of exact, pathPrefix, regex")
        if self.regex is not None:
            re.compile(self.regex)
        return self


class ValueMatch(Strict):
    exact: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ValueMatch:
        if (self.exact is None) == (self.regex is None):
            raise ValueError("set exactly one of exact, regex")
        return self


class HeaderMatch(Strict):
    name: str
    value: ValueMatch


class RouteMatch(Strict):
    path: PathMatch | None = None
    headers: list[HeaderMatch] = []
    query: list[HeaderMatch] = []
    method: str | None = None
