"""Processing one study in a worker process: quantify, build SEG + SR + summary, write them.

:func:`process_study` runs in a separate process (never in an association thread). It gets
plain arguments, returns a plain :class:`ProcessingOutcome`, and writes its result objects
durably under ``data_dir/results`` before it returns.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_templates.seg import build_seg, hypoxic_levels
from dicom_templates.sr import build_sr
from dicom_templates.summary import build_summary
from dicom_templates.uids import derive_uid
from quant.errors import QuantificationError
from quant.longitudinal.comparison import PairComparison
from quant.pipeline import QuantifiedStudy, quantify
from service.config import Config
from service.pipeline.attribute_hygiene import tolerate_malformed, values_not_logged
from service.pipeline.follow_up import FollowUpInput, compare_with_prior
from service.pipeline.memory_budget import over_budget
from service.storage.store import InstanceStore
from service.storage.study_files import read_study

log = logging.getLogger("hypoxnode.processing")


@dataclass
class ProcessingOutcome:
    """What a worker hands back to the service."""

    study_instance_uid: str
    ok: bool
    error: str | None = None
    result: dict[str, Any] | None = None
    outputs: list[tuple[str, str, str]] = field(default_factory=list)
    """``(kind, SOPInstanceUID, path)`` of each result object written."""
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass
class ResultObjects:
    """The DICOM objects built for one quantified study."""

    seg: Dataset
    """The regions SEG (muscle reference and lesions)."""
    sr: Dataset
    summary: Dataset
    hypoxic_segs: dict[float, Dataset] = field(default_factory=dict)
    """The hypoxic SEG of each threshold with voxels (see
    :func:`dicom_templates.seg.hypoxic_levels`)."""

    def by_kind(self) -> list[tuple[str, Dataset]]:
        """``(kind, data set)`` of every object, in the order they are written and sent."""
        segs = [self.seg, *(self.hypoxic_segs[t] for t in sorted(self.hypoxic_segs))]
        return [*(("SEG", seg) for seg in segs), ("SR", self.sr), ("SC", self.summary)]


def write_result_objects(
    objects: ResultObjects, write: Callable[[bytes, str, str], Path]
) -> list[tuple[str, str, str]]:
    """Encode and write every result object; ``(kind, sop_instance_uid, path)`` of each.

    ``write(data, kind, sop_instance_uid)`` stores one encoded object and returns its path
    (the node's store, or a folder of the ``quantify`` command).
    """
    written = []
    for kind, dataset in objects.by_kind():
        uid = str(dataset.SOPInstanceUID)
        written.append((kind, uid, str(write(encode(dataset), kind, uid))))
    return written


def build_result_objects(
    quantified: QuantifiedStudy,
    config: Config,
    generation: int,
    previous_report: Dataset | None = None,
    comparison: PairComparison | None = None,
) -> ResultObjects:
    """Build the SEGs, the summary and the SR (which references them) for one result.

    UIDs are derived from the study, the PET instances quantified, the figures and the
    generation: the same input and result give the same UIDs, a re-processing new ones. With
    ``previous_report`` (the SR of the earlier generation) the new SR says it supersedes it;
    with ``comparison`` the SR reports the changes since the subject's prior study.
    """
    if quantified.pet.frame_numbers:
        # highdicom needs a multi-frame source once, with frames mapped by number; the SEG
        # builder takes single-frame slices. Refuse clearly rather than fail inside it.
        raise QuantificationError(
            "Enhanced PET (multi-frame) is converted to SUV (see `hypoxnode suv` and"
            " `quantify --json`), but the SEG, SR and summary need the PET as single-frame"
            " images: send the PET Image Storage series"
        )
    result = quantified.result
    pet_datasets = quantified.pet.datasets
    inputs = hashlib.sha256("\\".join(result.pet_sop_instance_uids).encode()).hexdigest()
    # The figures are part of the seed: another software version or configuration that
    # computes different figures from the same input never reuses a UID for other content.
    figures = hashlib.sha256(
        json.dumps(result.to_json(), sort_keys=True, default=str).encode()
    ).hexdigest()
    seed = (result.study_instance_uid, result.pet_series_instance_uid, inputs, figures,
            str(generation))
    prefix = config.output.uid_prefix

    def uid(kind: str) -> str:
        return derive_uid(*seed, kind, prefix=prefix)

    seg = build_seg(
        result,
        pet_datasets,
        series_instance_uid=uid("seg-series"),
        sop_instance_uid=uid("seg"),
        series_number=config.output.seg_series_number,
        instance_number=generation,
    )
    hypoxic_segs: dict[float, Dataset] = {
        level: build_seg(
            result,
            pet_datasets,
            series_instance_uid=uid(f"hypoxic-seg-series-{level:g}"),
            sop_instance_uid=uid(f"hypoxic-seg-{level:g}"),
            series_number=config.output.hypoxic_seg_series_number + k,
            instance_number=generation,
            level=level,
        )
        for k, level in enumerate(hypoxic_levels(result))
    }
    # one copy each (the images are float32 already: astype would copy a second time)
    suv_array = sitk.GetArrayFromImage(quantified.pet.suv).astype(np.float32, copy=False)
    ct_array = (
        sitk.GetArrayFromImage(quantified.ct_on_pet).astype(np.float32, copy=False)
        if quantified.ct_on_pet is not None
        else None
    )
    sx, sy, sz = (float(s) for s in quantified.pet.suv.GetSpacing())
    summary = build_summary(
        result,
        suv_array,
        ct_array,
        (sz, sy, sx),  # array axis order (slice, row, column)
        pet_datasets,
        series_instance_uid=uid("summary-series"),
        sop_instance_uid=uid("summary"),
        series_number=config.output.summary_series_number,
        instance_number=generation,
    )
    sr = build_sr(
        result,
        pet_datasets,
        seg,
        series_instance_uid=uid("sr-series"),
        sop_instance_uid=uid("sr"),
        series_number=config.output.sr_series_number,
        instance_number=generation,
        hypoxic_segs=hypoxic_segs,
        summary=summary,
        previous_report=previous_report,
        comparison=comparison,
    )
    return ResultObjects(seg=seg, sr=sr, summary=summary, hypoxic_segs=hypoxic_segs)


def encode(dataset: Dataset) -> bytes:
    """A dataset as DICOM Part 10 bytes."""
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _compare(
    quantified: QuantifiedStudy, follow_up: FollowUpInput, config: Config
) -> PairComparison | None:
    """The comparison with the prior; a fault in it becomes a warning, never a failed study."""
    try:
        return compare_with_prior(quantified, follow_up, config.follow_up)
    except Exception as exc:
        log.exception("comparison with the prior study failed")
        quantified.result.warnings.append(
            f"not compared with the prior study ({type(exc).__name__}: {exc})"
        )
        return None


def warm_up() -> None:
    """Runs once in a new worker process: the imports above are done; nothing else to do."""


def process_study(
    config: Config,
    study_instance_uid: str,
    paths: list[str],
    generation: int,
    previous_report_path: str | None = None,
    follow_up: FollowUpInput | None = None,
) -> ProcessingOutcome:
    """Quantify one study and write its result objects (runs in a worker process).

    Never raises for a study that cannot be processed: the reason goes into the outcome.
    ``previous_report_path`` is the SR of the study's previous generation, if any: the new SR
    supersedes it. ``follow_up``: the subject's earlier studies and the repeatability
    coefficients in use; the study is compared with the most recent earlier one.
    """
    with values_not_logged():
        return _process_study(config, study_instance_uid, paths, generation,
                              previous_report_path, follow_up)


def _process_study(
    config: Config,
    study_instance_uid: str,
    paths: list[str],
    generation: int,
    previous_report_path: str | None,
    follow_up: FollowUpInput | None,
) -> ProcessingOutcome:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    try:
        files = read_study(Path(p) for p in paths)
        too_large = over_budget(files.pet, files.ct, config.node.max_memory_mb)
        if too_large is not None:  # before any pixel is decoded
            raise QuantificationError(too_large)
        timings["load_s"] = time.perf_counter() - started
        mark = time.perf_counter()
        quantified = quantify(files.pet, files.ct, files.structures, config.quant.to_settings())
        quantified.result.warnings.extend(files.notes)
        timings["quantify_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        comparison = _compare(quantified, follow_up, config) if follow_up else None
        if comparison is not None:
            timings["compare_s"] = time.perf_counter() - mark
            mark = time.perf_counter()
        previous = dcmread(previous_report_path) if previous_report_path else None
        # after the figures: the builders copy these, the quantification read its own
        tolerate_malformed(quantified.pet.datasets)
        objects = build_result_objects(quantified, config, generation, previous, comparison)
        timings["build_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        store = InstanceStore(config.data_dir, tmp_name=config.cluster.tmp_name)
        outputs = write_result_objects(
            objects, lambda data, kind, uid: store.write_result(data, study_instance_uid, kind,
                                                                uid))
        timings["write_s"] = time.perf_counter() - mark
    except QuantificationError as exc:
        return ProcessingOutcome(study_instance_uid, ok=False, error=str(exc), timings_s=timings)
    except Exception as exc:  # a defect must not take the service down; record it
        log.exception("processing failed unexpectedly")
        return ProcessingOutcome(
            study_instance_uid,
            ok=False,
            error=f"internal error while processing ({type(exc).__name__}: {exc})",
            timings_s=timings,
        )
    result = quantified.result.to_json()
    if comparison is not None:
        result["comparison"] = comparison.to_json()
    return ProcessingOutcome(
        study_instance_uid,
        ok=True,
        result=result,
        outputs=outputs,
        timings_s=timings,
    )
