"""The HTML status pages: the list of studies, and one study with its figures and exports."""

from __future__ import annotations

import html
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

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


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
        f"<meta http-equiv=refresh content=30><style>{STYLE}</style></head>"
        f"<body><h1>{_e(title)}</h1>{body}"
        f"<p class=muted>hypoxnode {_e(software_version())}</p></body></html>"
    )


def _state(state: str) -> str:
    return f"<span class='state {_e(state)}'>{_e(state)}</span>"


def study_list(
    studies: list[dict[str, Any]],
    status: dict[str, Any],
    cohort: list[tuple[str, Repeatability]] | None = None,
) -> str:
    """The home page: node status, the most recent studies and the site's repeatability."""
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(status["studies"].items())) or "none yet"
    exports = ", ".join(f"{k}: {v}" for k, v in sorted(status["exports"].items())) or "none yet"
    receivers = status.get("receiver_processes") or {}
    receiving = (
        f"; receiving processes {_e(receivers.get('running'))} of "
        f"{_e(receivers.get('configured'))}"
        + (f" ({_e(receivers['restarts'])} restarted)" if receivers.get("restarts") else "")
        if receivers else ""
    )
    head = (
        f"<p>AE title <b>{_e(status['ae_title'])}</b>, port {_e(status['port'])}"
        f"{receiving}; studies {_e(counts)}; exports {_e(exports)}</p>"
    )
    routing = {d["study_instance_uid"]: d for d in status.get("routing") or []}
    rows = []
    for study in studies:
        uid = study["study_instance_uid"]
        figures = _headline(study.get("result"))
        decision = routing.get(uid)
        rule = (f"<span title='{_e(decision['why'])}'>{_e(decision['rule'])}: "
                f"{_e(decision['action'])}</span>" if decision else "")
        error = f"<span class=error>{_e(study['error'])}</span>" if study.get("error") else ""
        rows.append(
            f"<tr><td><a href='/studies/{_e(uid)}'>{_e(uid)}</a></td>"
            f"<td>{_state(study['state'])}</td><td class=num>{_e(study['instances'])}</td>"
            f"<td>{_e(_when(study['last_received_at']))}</td><td>{rule}</td>"
            f"<td>{figures}{error}</td></tr>"
        )
    table = (
        "<table id=studies><tr><th>study</th><th>state</th><th>instances</th>"
        "<th>last received</th><th>routing rule</th><th>figures / reason</th></tr>"
        + "".join(rows) + "</table>"
        if rows else "<p>No study received yet.</p>"
    )
    return _page("hypoxnode", head + _quarantine(status.get("quarantined") or []) + table
                 + _routing_table(status.get("routing") or [])
                 + _priors_table(status.get("priors_from_pacs") or [])
                 + _cohort_table(cohort or []))


def _quarantine(files: list[dict[str, str]]) -> str:
    """Instance files start-up could not index, kept in ``quarantine/`` (never deleted)."""
    if not files:
        return ""
    rows = "".join(f"<tr><td>{_e(f['file'])}</td><td>{_e(f['reason'])}</td></tr>"
                   for f in files)
    return (f"<h2 class=error>Quarantined instance files ({len(files)})</h2><p>Files found"
            " under <code>instances/</code> at start-up that could not be indexed; kept in"
            " <code>quarantine/</code> of the data folder for a person to look at.</p>"
            "<table id=quarantine><tr><th>file</th><th>reason</th></tr>" + rows + "</table>")


def _priors_table(requests: list[dict[str, Any]]) -> str:
    """Priors looked up in the PACS: state and why (pending, compared, none, not compared)."""
    if not requests:
        return ""
    rows = "".join(
        f"<tr data-study='{_e(r['study_instance_uid'])}'><td>{_e(r['study_instance_uid'])}</td>"
        f"<td>{_state(r['state'])}</td><td>{_e(', '.join(r['priors']))}</td>"
        f"<td>{_e(r['detail'])}</td><td class=num>{_e(r['attempts'])}</td>"
        f"<td>{_e(_when(r['updated_at']))}</td></tr>"
        for r in requests
    )
    return ("<h2>Priors from PACS</h2><table id=priors><tr><th>study</th><th>state</th>"
            "<th>priors retrieved</th><th>detail</th><th>attempts</th><th>updated</th></tr>"
            + rows + "</table>")


def _routing_table(decisions: list[dict[str, Any]]) -> str:
    """Which routing rule each study matched, why, and what became of it."""
    if not decisions:
        return ""
    rows = []
    for d in decisions:
        forwarded = (f"{d['forwarded']} sent, {d['forward_pending']} pending, "
                     f"{d['forward_failed']} failed to {', '.join(d['forward_to'])}"
                     if d["forward_to"] else "")
        rows.append(
            f"<tr data-study='{_e(d['study_instance_uid'])}'><td>{_e(d['study_instance_uid'])}"
            f"</td><td>{_e(d['rule'])}</td><td>{_e(d['action'])}</td>"
            f"<td>{_e(d['profile'] or '')}</td><td>{_e(forwarded)}</td><td>{_e(d['why'])}</td>"
            f"<td>{_e(d['outcome'])}</td></tr>"
        )
    return (
        "<h2>Routing</h2><table id=routing><tr><th>study</th><th>rule</th><th>action</th>"
        "<th>profile</th><th>originals forwarded</th><th>why</th><th>outcome</th></tr>"
        + "".join(rows) + "</table>"
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _cohort_table(cohort: list[tuple[str, Repeatability]]) -> str:
    """Test-retest statistics per tracer and figure (nothing when there are no pairs)."""
    if not cohort:
        return ""
    rows = []
    for tracer, r in cohort:
        log = r.log
        wcv = (f"{_pct(log.wcv)} [{_pct(log.wcv_ci.low)}, {_pct(log.wcv_ci.high)}]"
               if log else "-")
        rc = _pct(log.relative_rc) if log else f"{r.rc:.3g}"
        icc = "-" if r.icc != r.icc else f"{r.icc:.2f} [{r.icc_ci.low:.2f}, {r.icc_ci.high:.2f}]"
        rows.append(
            f"<tr><td>{_e(tracer)}</td><td>{_e(FIGURE_LABELS.get(r.figure, r.figure))}</td>"
            f"<td class=num>{r.n_subjects}</td><td class=num>{_e(wcv)}</td>"
            f"<td class=num>{_e(rc)}</td><td class=num>{_e(icc)}</td></tr>"
        )
    return (
        "<h2>Repeatability from this site's test-retest pairs</h2>"
        "<table id=repeatability><tr><th>tracer</th><th>figure</th><th>pairs</th>"
        "<th>wCV [95% CI]</th><th>RC (relative)</th><th>ICC [95% CI]</th></tr>"
        + "".join(rows) + "</table><p class=muted>wCV and relative RC from log values "
        "(RC = 2.77 wSD); figures with zeros show the RC in their units. "
        "<a href='/api/repeatability'>JSON</a></p>"
    )


def _headline(result: dict[str, Any] | None) -> str:
    if not result:
        return ""
    lesions = result.get("lesions", [])
    if not lesions:
        return f"{_e(result.get('tracer'))}: no lesion found"
    top = lesions[0]
    return (
        f"{_e(result.get('tracer'))}: SUVmax {top['suv_max']:.2f}, "
        f"T/M max {top['tm_max']:.2f}, {len(lesions)} lesion(s)"
    )


def study_detail(study: dict[str, Any]) -> str:
    """One study: state, reason of a failure, figures, summary image, exports."""
    uid = study["study_instance_uid"]
    parts = [
        f"<p>Study <code>{_e(uid)}</code> {_state(study['state'])} "
        f"(generation {_e(study['generation'])}, "
        f"last instance {_e(_when(study['last_received_at']))})</p>"
    ]
    if study.get("error"):
        parts.append(f"<p class=error id=reason>Not quantified: {_e(study['error'])}</p>")
    parts.append("<h2>Series received</h2><table><tr><th>series</th><th>modality</th>"
                 "<th>instances</th></tr>" + "".join(
                     f"<tr><td>{_e(s['series_instance_uid'])}</td><td>{_e(s['modality'])}</td>"
                     f"<td class=num>{_e(s['instances'])}</td></tr>" for s in study["series"])
                 + "</table>")
    result = study.get("result")
    if result:
        parts.append(_figures(result))
    if any(r["kind"] == "SC" for r in study["results"]):
        parts.append(f"<h2>Summary</h2><img class=summary id=summary alt='summary' "
                     f"src='/studies/{_e(uid)}/summary.png'>")
    if study["exports"]:
        parts.append(
            "<h2>Exports</h2><table id=exports><tr><th>object</th><th>destination</th>"
            "<th>state</th><th>attempts</th><th>last error</th><th>updated</th></tr>"
            + "".join(
                f"<tr><td>{_e(_kind(study, e['sop_instance_uid']))}</td>"
                f"<td>{_e(e['destination'])}</td><td>{_state(e['state'])}</td>"
                f"<td class=num>{_e(e['attempts'])}</td><td>{_e(e['last_error'])}</td>"
                f"<td>{_e(_when(e['updated_at']))}</td></tr>"
                for e in study["exports"]
            )
            + "</table>"
        )
    return _page(f"Study {uid[-24:]}", "".join(parts) + "<p><a href='/'>all studies</a></p>")


def _kind(study: dict[str, Any], sop_uid: str) -> str:
    for row in study["results"]:
        if row["sop_instance_uid"] == sop_uid:
            return str(row["kind"])
    return sop_uid


def _figures(result: dict[str, Any]) -> str:
    muscle = result["muscle"]
    rows = [
        f"<p>Tracer <b>{_e(result['tracer'])}</b>, SUV{_e(result['suv_type']).lower()}; "
        f"muscle reference SUVmean <b>{muscle['suv_mean']:.3f}</b> (SD {muscle['suv_sd']:.3f}, "
        f"{muscle['volume_ml']:.1f} ml, {_e(muscle.get('location', ''))})</p>"
    ]
    lesions = result["lesions"]
    if not lesions:
        rows.append("<p id=no-lesion><b>No lesion found.</b></p>")
    else:
        header = ("<tr><th>lesion</th><th>source</th><th>SUVmax</th><th>SUVmean</th>"
                  "<th>SUVpeak</th><th>volume ml</th><th>T/M max</th><th>T/M mean</th>"
                  "<th>hypoxic volume ml (fraction)</th></tr>")
        body = "".join(
            f"<tr><td>{_e(les.get('label'))}</td><td>{_e(les.get('source'))}</td>"
            f"<td class=num>{les['suv_max']:.2f}</td><td class=num>{les['suv_mean']:.2f}</td>"
            f"<td class=num>{les['suv_peak']:.2f}</td><td class=num>{les['volume_ml']:.1f}</td>"
            f"<td class=num>{les['tm_max']:.2f}</td><td class=num>{les['tm_mean']:.2f}</td><td>"
            + "; ".join(f"T/M &ge; {h['threshold']:g}: {h['volume_ml']:.1f} ({h['fraction']:.0%})"
                        for h in les["hypoxic"])
            + "</td></tr>"
            for les in lesions
        )
        rows.append(f"<h2>Figures</h2><table id=figures>{header}{body}</table>")
    excluded = result.get("excluded_candidates") or []
    if excluded:
        body = "".join(
            f"<tr><td>{_e(c.get('label'))}</td><td>{_e(c.get('reason'))}</td>"
            f"<td class=num>{c['suv_max']:.2f}</td><td class=num>{c['volume_ml']:.1f}</td>"
            f"<td>{_e(c.get('centroid_mm'))}</td></tr>"
            for c in excluded
        )
        rows.append(
            "<h2>Excluded candidates</h2><table id=excluded><tr><th>candidate</th>"
            "<th>reason</th><th>SUVmax</th><th>volume ml</th><th>centre (LPS mm)</th></tr>"
            f"{body}</table>"
        )
    if result.get("comparison"):
        rows.append(_comparison(result["comparison"]))
    if result.get("warnings"):
        rows.append("<h2>Warnings</h2><ul>" + "".join(
            f"<li>{_e(w)}</li>" for w in result["warnings"]) + "</ul>")
    return "".join(rows)


def _comparison(comparison: dict[str, Any]) -> str:
    """The comparison with the prior study: kind, prior, and per matched lesion the changes."""
    kind = PAIR_KIND_TEXT.get(PairKind(comparison["kind"]), comparison["kind"])
    parts = [
        f"<h2>Compared with prior study</h2><p id=pair-kind data-kind='{_e(comparison['kind'])}'>"
        f"<b>{_e(kind)}</b>: prior study <code>{_e(comparison['prior_study_instance_uid'])}</code>"
        f" scanned {_e(comparison.get('prior_scan_datetime'))}, "
        f"{comparison['interval_days']:.2f} days earlier; {_e(comparison['alignment'])}</p>"
    ]
    rows = []
    for lesion in comparison["lesions"]:
        for change in lesion["changes"] + [
            c for h in lesion["hypoxic"] for c in (h["volume_ml"], h["fraction"])
        ]:
            verdict = {True: "exceeds RC", False: "within RC", None: "not judged"}[
                change["exceeds"]]
            relative = _pct(change["relative"])
            rows.append(
                f"<tr><td>Lesion {lesion['current_number']} (prior {lesion['prior_number']})"
                f"</td><td>{_e(FIGURE_LABELS.get(change['figure'], change['figure']))}</td>"
                f"<td class=num>{change['prior']:.3g}</td><td class=num>{change['current']:.3g}"
                f"</td><td class=num>{relative}</td><td>{verdict}</td></tr>"
            )
    if rows:
        parts.append("<table id=changes><tr><th>lesion</th><th>figure</th><th>prior</th>"
                     "<th>now</th><th>change</th><th>repeatability</th></tr>"
                     + "".join(rows) + "</table>")
    parts += [f"<p class=muted>{_e(note)}</p>" for note in comparison.get("notes", [])]
    return "".join(parts)
