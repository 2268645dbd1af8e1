"""Profile the node's processing of one study, outside the node: ``process_study`` twice.

Run as a script with the code under test first on ``PYTHONPATH`` (the benchmark does this)::

    PYTHONPATH=CODE_DIR python tests/bench/profile_processing.py STUDY_DIR OUT.txt

1. A plain call gives the worker's own ``timings_s`` (load, quantify, build, write) and the
   process's peak RSS.
2. A call under :mod:`cProfile` splits ``quantify`` into SUV, CT, muscle reference and lesion
   steps by the cumulative time of the functions that do them (cProfile slows Python-heavy
   code more than numpy/ITK code, so the *fractions* are indicative, the plain call's
   ``timings_s`` are the figures). The top functions go to ``OUT.txt``.

``--plain-only`` skips step 2. ``HXBENCH_QUANT_VARIANT`` patches levers into ``quant`` first
(see ``quant_variant.py``). Prints one JSON object on standard output. Imports only the code
under test, numpy and the standard library, so it runs against a snapshot of ``service`` and
``quant``.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

STEPS: dict[str, tuple[str, str]] = {
    "read_study": ("study_files.py", "read_study"),
    "quantify": ("pipeline.py", "quantify"),
    "suv_volume (load_pet_suv)": ("volume.py", "load_pet_suv"),
    "ct_volume (load_ct_hu)": ("volume.py", "load_ct_hu"),
    "ct_to_pet (resample_to)": ("volume.py", "resample_to"),
    "muscle_reference": ("muscle.py", "muscle_reference"),
    "detect_lesions": ("regions.py", "detect_lesions"),
    "lesion_figures": ("figures.py", "lesion_figures"),
    "build_result_objects": ("processing.py", "build_result_objects"),
    "build_seg": ("seg.py", "build_seg"),
    "build_summary": ("summary.py", "build_summary"),
    "build_sr": ("sr.py", "build_sr"),
    "encode": ("processing.py", "encode"),
    "dcmread": ("filereader.py", "dcmread"),
    "pixel_array": ("dataset.py", "pixel_array"),
}
"""Label -> (file name ending, function name) whose cumulative time is reported."""


def _cumulative(stats: pstats.Stats, file_end: str, function: str) -> float | None:
    total = None
    for (filename, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        if name == function and filename.endswith(file_end):
            total = (total or 0.0) + float(row[3])
    return total


def main(argv: list[str]) -> int:
    """Profile the study in ``argv[0]``; write the top functions to ``argv[1]``."""
    plain_only = "--plain-only" in argv
    argv = [a for a in argv if a != "--plain-only"]
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    study_dir, out_txt = Path(argv[0]), Path(argv[1])
    from quant_variant import apply_from_environment  # beside this script

    from service.config import load_config
    from service.pipeline.processing import process_study
    from service.storage.study_files import find_files

    variants = apply_from_environment()

    paths = [str(p) for p in find_files(study_dir)]
    with tempfile.TemporaryDirectory(prefix="hxprof-") as tmp:
        config = load_config(None, node={"data_dir": tmp})
        t0 = time.perf_counter()
        plain = process_study(config, "1.2.3", paths, 1)
        plain_wall = time.perf_counter() - t0
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
        if plain_only:
            print(json.dumps({
                "instances": len(paths), "variants": variants, "ok": plain.ok,
                "error": plain.error,
                "plain_timings_s": {k: round(v, 3) for k, v in plain.timings_s.items()},
                "plain_wall_s": round(plain_wall, 3), "peak_rss_mb": round(peak_rss_mb, 1),
                "lesions": len((plain.result or {}).get("lesions", [])),
                "result": plain.result,
            }))
            return 0
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.enable()
        profiled = process_study(config, "1.2.3", paths, 2)
        profiler.disable()
        profiled_wall = time.perf_counter() - t0
    stats = pstats.Stats(profiler)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
    out_txt.parent.mkdir(parents=True, exist_ok=True)
    out_txt.write_text(text.getvalue())
    cumulative = {
        label: round(value, 3)
        for label, (file_end, function) in STEPS.items()
        if (value := _cumulative(stats, file_end, function)) is not None
    }
    print(json.dumps({
        "instances": len(paths),
        "variants": variants,
        "ok": plain.ok and profiled.ok,
        "error": plain.error or profiled.error,
        "plain_timings_s": {k: round(v, 3) for k, v in plain.timings_s.items()},
        "plain_wall_s": round(plain_wall, 3),
        "profiled_wall_s": round(profiled_wall, 3),
        "profiled_cumulative_s": cumulative,
        "peak_rss_mb": round(peak_rss_mb, 1),
        "profile_text": str(out_txt),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
