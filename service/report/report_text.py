"""The figures of one result as a plain-text table (``quantify`` without ``--json``, demo)."""

from __future__ import annotations

from typing import Any


def format_table(result: dict[str, Any]) -> str:
    """Render the ``quantify --json`` dict for a terminal."""
    muscle = result["muscle"]
    lines = [
        f"study      {result['study_instance_uid']}",
        f"PET series {result['pet_series_instance_uid']}",
        f"tracer     {result['tracer']}    SUV type {result['suv_type']}",
        f"muscle     SUVmean {muscle['suv_mean']:.3f}  SD {muscle['suv_sd']:.3f}"
        f"  volume {muscle['volume_ml']:.1f} ml  ({muscle.get('location', '')})",
    ]
    lesions = result["lesions"]
    if not lesions:
        lines.append("lesions    no lesion found")
    else:
        header = (
            f"{'lesion':<14}{'SUVmax':>8}{'SUVmean':>9}{'SUVpeak':>9}{'vol ml':>9}"
            f"{'T/M max':>9}{'T/M mean':>10}  hypoxic volume ml (fraction) per T/M threshold"
        )
        lines += ["", header, "-" * len(header)]
        for lesion in lesions:
            hypoxic = "  ".join(
                f">={h['threshold']:g}: {h['volume_ml']:.1f} ({h['fraction']:.0%})"
                for h in lesion["hypoxic"]
            )
            lines.append(
                f"{lesion.get('label', ''):<14}{lesion['suv_max']:>8.2f}{lesion['suv_mean']:>9.2f}"
                f"{lesion['suv_peak']:>9.2f}{lesion['volume_ml']:>9.1f}{lesion['tm_max']:>9.2f}"
                f"{lesion['tm_mean']:>10.2f}  {hypoxic}"
            )
    for warning in result.get("warnings", []):
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
