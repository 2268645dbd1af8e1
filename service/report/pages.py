"""The HTML status pages: the list of studies, and one study with its figures and exports.

Jinja2 templates (``service/report/templates/``, autoescaped); this module turns the index's
rows into what they show (times, percentages, the routing and comparison texts).
"""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from quant.figure_registry import FIGURE_LABELS
from quant.longitudinal.pairing import PAIR_KIND_TEXT, PairKind
from quant.stats.repeatability import Repeatability

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2430;background:#fafbfc}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #d5dae1;padding:.3rem .6rem;text-align:left;font-size:.9rem}
th{background:#eef1f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.state{font-weight:600;padding:.1rem .4rem;border-radius:.3rem}
.done{background:#d9f2dd}.failed{background:#f8d7da}.processing,.queued{background:#fff3cd}
.receiving{background:#e2e8f0}.pending{background:#fff3cd}.sent{background:#d9f2dd}
.error{color:#8b1a1a;font-weight:600}.muted{color:#667}
img.summary{max-width:100%;border:1px solid #d5dae1}
"""


def software_version() -> str:
    """The installed hypoxnode version."""
    try:
        return version("hypoxnode")
    except PackageNotFoundError:
        return "unknown"


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


TEMPLATES = Environment(
    loader=PackageLoader("service.report", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    finalize=lambda value: "" if value is None else value,
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters["g"] = lambda value: f"{value:g}"
TEMPLATES.filters["g3"] = lambda value: f"{value:.3g}"
TEMPLATES.filters["pct0"] = lambda value: f"{value:.0%}"
TEMPLATES.filters["mm"] = lambda point: (
    ", ".join(f"{float(v):.1f}" for v in point) if point else "")


def _render(template: str, title: str, **values: Any) -> str:
    return TEMPLATES.get_template(template).render(
        title=title, style=STYLE, version=software_version(), **values)


def study_list(
    studies: list[dict[str, Any]],
    status: dict[str, Any],
    cohort: list[tuple[str, Repeatability]] | None = None,
) -> str:
    """The home page: node status, the most recent studies and the site's repeatability."""
    routing = status.get("routing") or []
    decisions = {d["study_instance_uid"]: d for d in routing}
    rows = [{
        "uid": study["study_instance_uid"],
        "state": study["state"],
        "instances": study["instances"],
        "when": _when(study["last_received_at"]),
        "decision": decisions.get(study["study_instance_uid"]),
        "headline": _headline(study.get("result")),
        "error": study.get("error"),
    } for study in studies]
    return _render(
        "study_list.html", "hypoxnode",
        status=status,
        receivers=status.get("receiver_processes") or {},
        cluster=status.get("cluster"),
        counts=", ".join(f"{k}: {v}" for k, v in sorted(status["studies"].items()))
        or "none yet",
        exports=", ".join(f"{k}: {v}" for k, v in sorted(status["exports"].items()))
        or "none yet",
        quarantined=status.get("quarantined") or [],
        rows=rows,
        routing=[{**d, "forwarded_text": _forwarded(d)} for d in routing],
        priors=[{**r, "when": _when(r["updated_at"])}
                for r in status.get("priors_from_pacs") or []],
        cohort=[_cohort_row(tracer, r) for tracer, r in cohort or []],
    )


def _forwarded(decision: dict[str, Any]) -> str:
    if not decision["forward_to"]:
        return ""
    return (f"{decision['forwarded']} sent, {decision['forward_pending']} pending, "
            f"{decision['forward_failed']} failed to {', '.join(decision['forward_to'])}")


def _cohort_row(tracer: str, r: Repeatability) -> dict[str, Any]:
    """Test-retest statistics of one tracer and figure, as the page shows them."""
    log = r.log
    wcv = f"{_pct(log.wcv)} [{_pct(log.wcv_ci.low)}, {_pct(log.wcv_ci.high)}]" if log else "-"
    icc = "-" if r.icc != r.icc else f"{r.icc:.2f} [{r.icc_ci.low:.2f}, {r.icc_ci.high:.2f}]"
    return {"tracer": tracer, "label": FIGURE_LABELS.get(r.figure, r.figure),
            "pairs": r.n_subjects, "wcv": wcv,
            "rc": _pct(log.relative_rc) if log else f"{r.rc:.3g}", "icc": icc}


def _headline(result: dict[str, Any] | None) -> str:
    if not result:
        return ""
    lesions = result.get("lesions", [])
    if not lesions:
        return f"{result.get('tracer')}: no lesion found"
    top = lesions[0]
    return (f"{result.get('tracer')}: SUVmax {top['suv_max']:.2f}, "
            f"T/M max {top['tm_max']:.2f}, {len(lesions)} lesion(s)")


def _object_label(kind: str, path: str) -> str:
    """``SEG hypoxic T/M>=1.5 (hypoxnode)``: the kind and the object's series description, so
    the regions SEG and each hypoxic SEG can be told apart; the kind alone if unreadable."""
    try:
        description = dcmread(path, stop_before_pixels=True,
                              specific_tags=["SeriesDescription"]).get("SeriesDescription", "")
    except (OSError, InvalidDicomError):
        return kind
    return f"{kind} {description}" if description else kind


def study_detail(study: dict[str, Any]) -> str:
    """One study: state, reason of a failure, figures, summary image, exports."""
    uid = study["study_instance_uid"]
    kinds = {row["sop_instance_uid"]: str(row["kind"]) for row in study["results"]}
    labels = {row["sop_instance_uid"]: _object_label(str(row["kind"]), str(row["path"]))
              for row in study["results"]}
    result = study.get("result")
    return _render(
        "study_detail.html", f"Study {uid[-24:]}",
        uid=uid,
        study=study,
        last_received=_when(study["last_received_at"]),
        result=result,
        comparison=_comparison(result["comparison"]) if result and result.get("comparison")
        else None,
        has_summary="SC" in kinds.values(),
        exports=[{**e, "kind": labels.get(e["sop_instance_uid"], e["sop_instance_uid"]),
                  "when": _when(e["updated_at"])} for e in study["exports"]],
    )


def _comparison(comparison: dict[str, Any]) -> dict[str, Any]:
    """The comparison with the prior study: kind, prior, and per matched lesion the changes."""
    rows = []
    for lesion in comparison["lesions"]:
        for change in lesion["changes"] + [
            c for h in lesion["hypoxic"] for c in (h["volume_ml"], h["fraction"])
        ]:
            rows.append({
                "current_number": lesion["current_number"],
                "prior_number": lesion["prior_number"],
                "label": FIGURE_LABELS.get(change["figure"], change["figure"]),
                "prior": change["prior"], "current": change["current"],
                "relative": _pct(change["relative"]),
                "verdict": {True: "exceeds RC", False: "within RC", None: "not judged"}[
                    change["exceeds"]],
            })
    return {**comparison,
            "kind_text": PAIR_KIND_TEXT.get(PairKind(comparison["kind"]), comparison["kind"]),
            "rows": rows, "notes": comparison.get("notes", [])}
