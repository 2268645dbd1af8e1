"""Routing rules: which rule a study matches, and why.

A study is decided once it is complete (quiet for ``[study] stable_seconds``), never on the
C-STORE path. What the rules see (:class:`StudyHeaders`):

- per instance, what the listener recorded on receipt: Modality, SOP Class UID and the calling
  AE title (in the index); the called AE title is the node's own (``[node] ae_title``: the
  listener does not record it per instance);
- per series, the header of one of its instances, read up to the pixel data: the tracer
  (RadiopharmaceuticalInformationSequence), SeriesDescription, BodyPartExamined, StationName.

The rules are tried in order; the first whose criteria all hold decides, else
``[routing.default]``. Study-level criteria (AE titles) hold when any instance of the study
matches; series-level criteria hold when one series matches all of them together, so
``modality = "PT"`` with ``tracer = "*ATSM*"`` is decided by the PET series and the CT of the
same study goes with it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

from quant.suv.tracers import identify_tracer
from service.config import Config
from service.config.quant import TRACER_NAMES, TracerConfig
from service.config.routing import (
    SERIES_CRITERIA,
    STUDY_CRITERIA,
    ActionConfig,
    RoutingConfig,
    compile_pattern,
)

log = logging.getLogger("hypoxnode.routing")

DEFAULT_RULE = "default"
HEADER_TAGS = ["Modality", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID",
               "SeriesDescription", "BodyPartExamined", "StationName",
               "RadiopharmaceuticalInformationSequence"]
"""What is read of one instance per series (no pixel data)."""


@dataclass(frozen=True)
class SeriesHeaders:
    """The values series-level criteria are matched against."""

    series_instance_uid: str
    modality: str = ""
    sop_class_uid: str = ""
    tracer: tuple[str, ...] = ()
    """Identified tracer name, Radiopharmaceutical text, code values and meanings."""
    series_description: str = ""
    body_part: str = ""
    station_name: str = ""
    instances: int = 0

    def values(self, criterion: str) -> tuple[str, ...]:
        """The values ``criterion`` is matched against (any of them may match)."""
        if criterion == "tracer":
            return self.tracer
        if criterion == "sop_class":
            uid = UID(self.sop_class_uid)
            return (self.sop_class_uid, uid.keyword) if uid.keyword else (self.sop_class_uid,)
        return (str(getattr(self, criterion)),)


@dataclass(frozen=True)
class StudyHeaders:
    """What the rules see of one study."""

    study_instance_uid: str
    calling_ae_title: tuple[str, ...] = ()
    called_ae_title: tuple[str, ...] = ()
    series: tuple[SeriesHeaders, ...] = ()


@dataclass(frozen=True)
class Decision:
    """The rule that matched a study and what it says."""

    rule: str
    action: str
    profile: str | None
    forward_to: tuple[str, ...]
    why: str

    def to_json(self) -> dict[str, Any]:
        """Plain values for the API and the status page."""
        return {"rule": self.rule, "action": self.action, "profile": self.profile,
                "forward_to": list(self.forward_to), "why": self.why}


def series_headers(dataset: Dataset, instances: int = 1) -> SeriesHeaders:
    """The criteria values of one series, from one of its instances' header."""
    tracer: list[str] = []
    items = list(dataset.get("RadiopharmaceuticalInformationSequence") or [])
    if items:
        try:
            tracer.append(identify_tracer(dataset).name)
        except Exception as exc:  # a malformed sequence: match on its texts only
            log.debug("tracer not identified: %s", exc)
        item = items[0]
        tracer.append(str(item.get("Radiopharmaceutical") or ""))
        for code in item.get("RadiopharmaceuticalCodeSequence") or []:
            tracer += [str(code.get("CodeValue") or ""), str(code.get("CodeMeaning") or "")]
    return SeriesHeaders(
        series_instance_uid=str(dataset.get("SeriesInstanceUID", "")),
        modality=str(dataset.get("Modality", "") or ""),
        sop_class_uid=str(dataset.get("SOPClassUID", "") or ""),
        tracer=tuple(t for t in tracer if t),
        series_description=str(dataset.get("SeriesDescription", "") or ""),
        body_part=str(dataset.get("BodyPartExamined", "") or ""),
        station_name=str(dataset.get("StationName", "") or ""),
        instances=instances,
    )


def read_header(path: Path | str) -> Dataset:
    """The :data:`HEADER_TAGS` of one instance file (stops before the pixel data)."""
    return dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))


def _match(patterns: list[str], values: Iterable[str]) -> str | None:
    """The first value any pattern matches, or None."""
    compiled = [compile_pattern(p) for p in patterns]
    for value in values:
        if any(c.fullmatch(value) for c in compiled):
            return value
    return None


def _describe(criterion: str, value: str, patterns: list[str]) -> str:
    shown = patterns[0] if len(patterns) == 1 else patterns
    return f"{criterion} {value!r} ~ {shown!r}"


def evaluate(routing: RoutingConfig, study: StudyHeaders) -> Decision:
    """The first rule whose criteria all hold for ``study``, else the default.

    Returns
    -------
    Decision
        With ``why``: the values that matched (or why the default applies).
    """
    for rule in routing.rules:
        reasons: list[str] = []
        ok = True
        for criterion, patterns in rule.criteria(STUDY_CRITERIA).items():
            value = _match(patterns, getattr(study, criterion))
            if value is None:
                ok = False
                break
            reasons.append(_describe(criterion, value, patterns))
        if not ok:
            continue
        series_criteria = rule.criteria(SERIES_CRITERIA)
        if series_criteria:
            matched = _matching_series(series_criteria, study.series)
            if matched is None:
                continue
            series, series_reasons = matched
            reasons.append(f"series {series.series_instance_uid} ({series.modality}, "
                           f"{series.instances} instance(s)): " + ", ".join(series_reasons))
        return _decision(rule.name, rule, "; ".join(reasons) or "rule without criteria")
    tried = ", ".join(repr(r.name) for r in routing.rules)
    why = f"no rule matched (tried {tried})" if routing.rules else "no routing rules configured"
    return _decision(DEFAULT_RULE, routing.default, why)


def _matching_series(criteria: dict[str, list[str]], series: Iterable[SeriesHeaders]
                     ) -> tuple[SeriesHeaders, list[str]] | None:
    for one in series:
        reasons = []
        for criterion, patterns in criteria.items():
            value = _match(patterns, one.values(criterion))
            if value is None:
                break
            reasons.append(_describe(criterion, value, patterns))
        else:
            return one, reasons
    return None


def _decision(rule: str, action: ActionConfig, why: str) -> Decision:
    return Decision(rule, action.action, action.profile, tuple(action.forward_to), why)


def profile_config(config: Config, profile: str | None) -> Config:
    """``config`` with ``[routing.profiles.<profile>]`` applied to ``[quant]``.

    The profile's values win over ``[quant]`` and over ``[quant.tracers."<tracer>"]`` for every
    tracer; values the profile leaves unset keep their usual source.
    """
    if profile is None:
        return config
    chosen = config.routing.profiles[profile]
    values = chosen.model_dump(include=set(TracerConfig.model_fields), exclude_none=True)
    follow_up = config.follow_up if chosen.follow_up else config.follow_up.model_copy(
        update={"enabled": False})
    if not values:
        return config.model_copy(update={"follow_up": follow_up})
    tracers = {}
    for name in TRACER_NAMES:
        current = config.quant.tracers.get(name, TracerConfig())
        tracers[name] = current.model_copy(update=values)
    quant = config.quant.model_copy(update={"tracers": tracers})
    return config.model_copy(update={"quant": quant, "follow_up": follow_up})


def result_destinations(config: Config, profile: str | None) -> list[str]:
    """Keys of the ``[[destinations]]`` that receive the results under ``profile``."""
    every = [d.key for d in config.destinations]
    if profile is None:
        return every
    chosen = config.routing.profiles[profile].destinations
    return every if chosen is None else [d for d in every if d in chosen]


def headers_from_files(paths: Iterable[Path], calling_ae_title: str = "",
                       called_ae_title: str = "") -> list[StudyHeaders]:
    """What the rules would see of the studies among ``paths`` (files that are not DICOM are
    skipped), in the order their studies are first found."""
    studies: dict[str, dict[str, list[Dataset]]] = {}
    for path in paths:
        try:
            dataset = read_header(path)
        except Exception as exc:  # not DICOM, or unreadable: route-test reports the rest
            log.debug("%s skipped: %s", path, exc)
            continue
        study_uid = str(dataset.get("StudyInstanceUID", ""))
        series_uid = str(dataset.get("SeriesInstanceUID", ""))
        studies.setdefault(study_uid, {}).setdefault(series_uid, []).append(dataset)
    out = []
    for study_uid, series in studies.items():
        out.append(StudyHeaders(
            study_uid,
            (calling_ae_title,) if calling_ae_title else (),
            (called_ae_title,) if called_ae_title else (),
            tuple(series_headers(datasets[0], len(datasets)) for datasets in series.values()),
        ))
    return out
