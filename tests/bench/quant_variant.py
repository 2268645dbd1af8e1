"""Processing levers patched into ``quant`` *in the profiling process only*, to measure them.

A measurement device, not a fix (``quant/`` belongs to its owners): :func:`apply` replaces
functions of the imported ``quant`` modules so ``profile_processing.py`` can say how much a
change would gain. ``HXBENCH_QUANT_VARIANT`` is a comma-separated list of:

``ct-float32``
    ``quant.image.volume._sorted_classic`` stacks the stored integers and rescales them in float32,
    in place, instead of two float64 copies of the volume (the CT of the whole-body study is
    600 x 512 x 512: 1.26 GB per float64 copy).
``bone-once``
    ``quant.segmentation.regions.enclosed_by_bone`` (a per-slice SimpleITK loop) is computed once
    per
    CT volume instead of once in ``muscle_reference`` and again in ``detect_lesions``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

VARIANTS = ("ct-float32", "bone-once")


def apply(variants: Sequence[str]) -> None:
    """Patch the imported quant modules for each named variant."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"HXBENCH_QUANT_VARIANT: unknown {unknown}; known: {VARIANTS}")
    if "ct-float32" in variants:
        from quant.image import volume

        def sorted_classic_f32(datasets: Sequence[Any]) -> tuple[list[Any], Any, np.ndarray]:
            if not datasets:
                raise volume.QuantificationError("no images: the series is empty")
            volume._single_series(datasets)
            for ds in datasets:
                if int(ds.get("NumberOfFrames", 1) or 1) > 1:
                    raise volume.QuantificationError(
                        "NumberOfFrames (0028,0008) > 1 in a single-frame series: not supported"
                    )
            planes = [volume.plane_of(ds) for ds in datasets]
            instance = [int(ds.get("InstanceNumber", 0) or 0) for ds in datasets]
            stack = volume.stack_geometry(planes, volume._same_pixels(datasets), instance)
            ordered = [datasets[i] for i in stack.order]
            values = np.stack([ds.pixel_array for ds in ordered]).astype(np.float32)
            slopes, intercepts = volume._rescale(ordered)
            values *= slopes.astype(np.float32)[:, None, None]
            values += intercepts.astype(np.float32)[:, None, None]
            return ordered, stack, values

        volume._sorted_classic = sorted_classic_f32
    if "bone-once" in variants:
        from quant.segmentation import regions as segmentation

        original = segmentation.enclosed_by_bone
        cache: dict[str, np.ndarray] = {}

        def enclosed_once(hu: np.ndarray) -> np.ndarray:
            key = hashlib.blake2b(np.ascontiguousarray(hu).data, digest_size=16).hexdigest()
            if key not in cache:
                cache.clear()
                cache[key] = original(hu)
            return cache[key].copy()

        segmentation.enclosed_by_bone = enclosed_once


def apply_from_environment() -> list[str]:
    """Apply ``HXBENCH_QUANT_VARIANT``; returns the variants applied."""
    variants = [v for v in os.environ.get("HXBENCH_QUANT_VARIANT", "").split(",") if v]
    apply(variants)
    return variants
