"""Comparing a study with the subject's previous one, in the worker process.

The node gathers what the worker needs (:class:`FollowUpInput`: the subject's earlier results
from the index, the paths of their instances and SEG, the repeatability coefficients in use);
the worker picks the prior (:func:`quant.longitudinal.pairing.find_prior`), aligns it and compares
(:func:`quant.longitudinal.comparison.compare`).

Alignment: a shared FrameOfReferenceUID needs none; otherwise the two CTs (each resampled to
its PET grid) are registered rigidly (:func:`quant.image.registration.register_rigid`) when
``[follow_up] register_different_frames`` is on and both CTs are held; failing that, lesions
are not matched and the report says so. The prior's hypoxic sub-volumes are read from its SEG
and resampled onto the current PET grid for Dice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import SimpleITK as sitk

from dicom_templates.seg import hypoxic_label
from quant.image.registration import point_mapper, register_rigid, resample_mask
from quant.image.volume import PetVolume, load_ct_hu, load_pet_suv, resample_to
from quant.longitudinal.comparison import NOT_ALIGNED, PairComparison, RcInUse, compare
from quant.longitudinal.pairing import StudyFacts, find_prior
from quant.pipeline import CT_AIR_HU, QuantifiedStudy
from service.config.follow_up import FollowUpConfig
from service.storage.study_files import read_study

log = logging.getLogger("hypoxnode.follow_up")

SHARED_FRAME = "shared frame of reference"
REGISTERED = "rigid registration of the CTs (Euler 3D, Mattes mutual information)"


@dataclass
class PriorCandidate:
    """An earlier quantified study of the same subject and tracer."""

    result: dict[str, Any]
    """Its ``to_json`` document (from the index)."""
    instance_paths: list[str] = field(default_factory=list)
    """Its PET and CT instances, when the node still holds them."""
    seg_paths: list[str] = field(default_factory=list)
    """Its latest SEGs (regions and hypoxic levels), when held."""
    origin: str | None = None
    """Where the node got it when not from a scanner (e.g. retrieved from a PACS)."""


@dataclass
class FollowUpInput:
    """What the worker needs to compare a study with its prior."""

    candidates: list[PriorCandidate]
    rc: dict[str, RcInUse]


@dataclass
class _PriorImages:
    pet: PetVolume
    ct_on_pet: sitk.Image | None


def _load_prior(candidate: PriorCandidate) -> _PriorImages | None:
    paths = [Path(p) for p in candidate.instance_paths if Path(p).is_file()]
    if not paths:
        return None
    files = read_study(paths)
    pet = load_pet_suv(files.pet)
    ct = resample_to(load_ct_hu(files.ct), pet.suv, CT_AIR_HU) if files.ct else None
    return _PriorImages(pet, ct)


def _prior_masks(
    candidate: PriorCandidate,
    prior: _PriorImages,
    reference: sitk.Image,
    transform: sitk.Transform | None,
) -> dict[tuple[int, float], np.ndarray]:
    """Hypoxic segments of the prior's SEGs on the current grid, by (lesion number, threshold).

    Found by their labels (:func:`dicom_templates.seg.hypoxic_label`) in whichever SEG holds
    them: one SEG per hypoxic level today, one SEG for everything in earlier versions.
    """
    by_label: dict[str, tuple[hd.seg.Segmentation, int]] = {}
    for path in candidate.seg_paths:
        if not Path(path).is_file():
            continue
        seg = hd.seg.segread(path)
        for item in seg.SegmentSequence:
            by_label[str(item.SegmentLabel)] = (seg, int(item.SegmentNumber))
    out = {}
    for n, lesion in enumerate(candidate.result.get("lesions") or [], start=1):
        for sub in lesion.get("hypoxic", []):
            found = by_label.get(hypoxic_label(n, float(sub["threshold"])))
            if found is None:
                continue
            seg, number = found
            mask = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=prior.pet.sop_instance_uids,
                segment_numbers=[number],
                assert_missing_frames_are_empty=True,
            )[..., 0].astype(bool)
            out[(n, float(sub["threshold"]))] = resample_mask(
                mask, prior.pet.suv, reference, transform
            )
    return out


def compare_with_prior(
    quantified: QuantifiedStudy, follow_up: FollowUpInput, settings: FollowUpConfig
) -> PairComparison | None:
    """Compare a quantified study with the most recent earlier one of its subject.

    Parameters
    ----------
    quantified
        The current study, with its PET and CT on the PET grid.
    follow_up
        Candidates and repeatability coefficients, from the node.
    settings
        ``[follow_up]``.

    Returns
    -------
    PairComparison or None
        None when no candidate is earlier.
    """
    result = quantified.result
    current = StudyFacts.from_result_json(result.to_json())
    by_key = {
        (c.result.get("study_instance_uid"), c.result.get("pet_series_instance_uid")): c
        for c in follow_up.candidates
    }
    pair = find_prior(
        current,
        [StudyFacts.from_result_json(c.result) for c in follow_up.candidates],
        test_retest_days=settings.test_retest_days,
    )
    if pair is None:
        return None
    candidate = by_key[(pair.prior.study_instance_uid, pair.prior.pet_series_instance_uid)]
    notes: list[str] = [candidate.origin] if candidate.origin else []
    try:
        prior = _load_prior(candidate)
    except Exception as exc:  # a prior that no longer reads: compare the figures only
        log.warning("prior study %s not readable: %s", pair.prior.study_instance_uid, exc)
        prior = None
    if prior is None:
        notes.append("the prior's images are no longer held: Dice not computed")
    transform: sitk.Transform | None = None
    same_frame = bool(result.frame_of_reference_uid) and (
        candidate.result.get("frame_of_reference_uid") == result.frame_of_reference_uid
    )
    if same_frame:
        alignment, aligned = SHARED_FRAME, True
    elif (
        settings.register_different_frames
        and prior is not None
        and prior.ct_on_pet is not None
        and quantified.ct_on_pet is not None
    ):
        transform, metric = register_rigid(quantified.ct_on_pet, prior.ct_on_pet)
        alignment, aligned = REGISTERED, True
        notes.append(f"registration metric (Mattes MI) {metric:.3f}")
    else:
        alignment, aligned = NOT_ALIGNED, False
    masks = (
        _prior_masks(candidate, prior, quantified.pet.suv, transform)
        if prior is not None and aligned
        else {}
    )
    comparison = compare(
        pair,
        candidate.result,
        result,
        follow_up.rc,
        tolerance_mm=settings.match_tolerance_mm,
        alignment=alignment,
        to_prior=point_mapper(transform),
        aligned=aligned,
        prior_masks=masks,
    )
    comparison.notes[:0] = notes
    return comparison
