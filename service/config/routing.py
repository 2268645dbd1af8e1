"""``[routing]``: which studies are processed, with which profile, and where originals go.

::

    [routing.profiles.atsm]                  # a named processing profile
    hypoxic_thresholds = [1.4]               # the keys of [quant.tracers."<tracer>"] ...
    delineation = "tm_threshold"
    destinations = ["PACS"]                  # ... and where the results go (default: all)

    [[routing.rules]]                        # evaluated in order; the first match decides
    name = "cu-atsm"
    modality = "PT"
    tracer = "*ATSM*"                        # glob, case-insensitive; "re:<regex>" for a regex
    action = "process"                       # process | forward | ignore
    profile = "atsm"
    forward_to = ["archive"]                 # also forward the original instances

    [routing.default]                        # no rule matched
    action = "process"

    [[routing.destinations]]                 # peers that receive forwarded originals only
    name = "archive"
    ae_title = "ARCHIVE"
    host = "10.0.0.9"
    port = 104

Criteria: ``calling_ae_title``, ``called_ae_title`` (study level: any instance of the study);
``modality``, ``sop_class`` (UID or keyword), ``tracer`` (identified tracer name,
Radiopharmaceutical text, code value or meaning), ``series_description``, ``body_part``
(BodyPartExamined), ``station_name`` (series level: one series must match all of them). Each is
one pattern or a list (any of them). A pattern is a glob (``fnmatch``, case-insensitive,
matched against the whole value) unless it starts with ``re:``: then a Python regular
expression that must match the whole value (``re.fullmatch``, case-insensitive).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.config.quant import TracerConfig

REGEX_PREFIX = "re:"
SERIES_CRITERIA = ("modality", "sop_class", "tracer", "series_description", "body_part",
                   "station_name")
"""Criteria one series of the study must match together."""
STUDY_CRITERIA = ("calling_ae_title", "called_ae_title")
"""Criteria any instance of the study may match."""

Action = Literal["process", "forward", "ignore"]


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A criterion pattern as a compiled, case-insensitive, whole-value regular expression.

    Raises
    ------
    ValueError
        ``re:`` followed by an invalid regular expression.
    """
    if pattern.startswith(REGEX_PREFIX):
        try:
            return re.compile(pattern[len(REGEX_PREFIX):], re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE)


def _patterns(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    if not values:
        raise ValueError("an empty list matches nothing: leave the key out instead")
    for pattern in values:
        compile_pattern(pattern)
    return values


class ProfileConfig(TracerConfig):
    """``[routing.profiles.<name>]``: quantification overrides and result destinations."""

    destinations: list[str] | None = None
    """Names of ``[[destinations]]`` that receive the results; None: all of them."""
    follow_up: bool = True
    """Compare with the subject's prior study (``[follow_up]`` must be enabled too)."""


class ActionConfig(BaseModel):
    """What to do with a study: the action, its profile, where to forward its originals."""

    model_config = ConfigDict(extra="forbid")

    action: Action = "process"
    profile: str | None = None
    """A key of ``[routing.profiles]``; only with ``action = "process"``. None: ``[quant]``."""
    forward_to: list[str] = Field(default_factory=list)
    """Destination names (``[[routing.destinations]]`` or ``[[destinations]]``)."""

    def problem(self) -> str | None:
        """What is inconsistent in this action (``"key: reason"``), or None."""
        if self.profile is not None and self.action != "process":
            return f'profile: only used with action = "process", not {self.action!r}'
        if self.action == "forward" and not self.forward_to:
            return 'forward_to: action = "forward" needs destination names'
        if self.action == "ignore" and self.forward_to:
            return 'forward_to: action = "ignore" forwards nothing (use action = "forward")'
        return None


class RuleConfig(ActionConfig):
    """``[[routing.rules]]``: criteria and the action taken when they all match."""

    name: str = Field(min_length=1)
    calling_ae_title: str | list[str] | None = None
    called_ae_title: str | list[str] | None = None
    modality: str | list[str] | None = None
    sop_class: str | list[str] | None = None
    tracer: str | list[str] | None = None
    series_description: str | list[str] | None = None
    body_part: str | list[str] | None = None
    station_name: str | list[str] | None = None

    def problem(self) -> str | None:
        """What is wrong with this rule (``"key: reason"``), or None."""
        for key in (*STUDY_CRITERIA, *SERIES_CRITERIA):
            try:
                _patterns(getattr(self, key))
            except ValueError as exc:
                return f"{key}: {exc}"
        return super().problem()

    def criteria(self, names: tuple[str, ...]) -> dict[str, list[str]]:
        """The criteria of this rule among ``names`` that are set, as lists of patterns."""
        out = {}
        for key in names:
            value = getattr(self, key)
            if value is not None:
                out[key] = [value] if isinstance(value, str) else list(value)
        return out


class ForwardDestination(BaseModel):
    """``[[routing.destinations]]``: a peer that receives forwarded originals only."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    ae_title: str = Field(min_length=1, max_length=16)
    host: str
    port: int = Field(ge=1, le=65535)
    deadline_seconds: float | None = Field(default=None, gt=0)
    """This peer's own ``[export] attempt_deadline_seconds``."""

    @property
    def key(self) -> str:
        """The name rules use."""
        return self.name


class RoutingConfig(BaseModel):
    """``[routing]``: see the module docstring. Without rules every study is processed with
    ``[quant]`` and its results go to every ``[[destinations]]`` entry (as before routing)."""

    model_config = ConfigDict(extra="forbid")

    rules: list[RuleConfig] = Field(default_factory=list)
    default: ActionConfig = Field(default_factory=ActionConfig)
    profiles: dict[str, ProfileConfig] = Field(default_factory=dict)
    destinations: list[ForwardDestination] = Field(default_factory=list)
    check_interval_seconds: float = Field(default=2.0, gt=0)
    """How often forwarded originals are sent and forwarded-only studies purged."""

    @model_validator(mode="after")
    def _references(self) -> RoutingConfig:
        names = [rule.name for rule in self.rules]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ValueError(f"rule name {duplicate!r} is used twice")
        for where, action in self._actions():
            problem = action.problem()
            if problem is not None:
                raise ValueError(f"{where}.{problem}")
            if action.profile is not None and action.profile not in self.profiles:
                raise ValueError(f"{where}: profile {action.profile!r} is not defined in"
                                 f" [routing.profiles] (defined: {sorted(self.profiles)})")
        return self

    def _actions(self) -> list[tuple[str, ActionConfig]]:
        return [*((f"routing.rules[{rule.name!r}]", rule) for rule in self.rules),
                ("routing.default", self.default)]

    def check_destinations(self, result_destinations: list[str]) -> None:
        """Every destination a rule or profile names exists.

        Raises
        ------
        ValueError
            Naming the rule (or profile) and the key.
        """
        forward = {d.key for d in self.destinations} | set(result_destinations)
        for where, action in self._actions():
            for name in action.forward_to:
                if name not in forward:
                    raise ValueError(f"{where}.forward_to: no destination {name!r} (known:"
                                     f" {sorted(forward)})")
        for name, profile in self.profiles.items():
            for dest in profile.destinations or []:
                if dest not in result_destinations:
                    raise ValueError(f"routing.profiles[{name!r}].destinations: no"
                                     f" [[destinations]] entry {dest!r} (known:"
                                     f" {sorted(result_destinations)})")
