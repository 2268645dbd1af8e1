"""Where voxels are: between ``[slice, row, col]`` array indices and patient millimetres.

One place for the geometry of a SimpleITK image (origin, spacing, direction), used by the
organ rules, the search region, the contours and the result's locations. Array indices are
``[slice, row, col]`` (numpy order); SimpleITK and patient coordinates are ``(x, y, z)``.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def index_to_mm_affine(image: sitk.Image) -> np.ndarray:
    """4 x 4 matrix taking ``(x, y, z, 1)`` voxel indices to patient mm (LPS)."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    out = np.eye(4)
    out[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    out[:3, 3] = image.GetOrigin()
    return out


def indices_to_mm(affine: np.ndarray, index_zyx: np.ndarray) -> np.ndarray:
    """Patient mm of ``[slice, row, col]`` indices (N, 3), by :func:`index_to_mm_affine`."""
    xyz = np.c_[index_zyx[:, ::-1], np.ones(len(index_zyx))]
    out: np.ndarray = (affine @ xyz.T).T[:, :3]
    return out


def voxel_centres_mm(image: sitk.Image) -> np.ndarray:
    """Patient mm (N, 3) of every voxel centre, in C order of the ``[slice, row, col]`` array."""
    nx, ny, nz = (int(v) for v in image.GetSize())
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    kk, jj, ii = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    index = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1) * spacing
    out: np.ndarray = origin + index @ direction.T
    return out


def voxel_z_mm(image: sitk.Image) -> np.ndarray:
    """Patient z (mm) of every voxel centre of ``image``, as an array ``[slice, row, col]``."""
    nx, ny, nz = image.GetSize()
    step = index_to_mm_affine(image)[2, :3]  # dz per unit index along x, y, z
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    out: np.ndarray = image.GetOrigin()[2] + i * step[0] + j * step[1] + k * step[2]
    return out


def mm_to_index(points_mm: np.ndarray, image: sitk.Image) -> np.ndarray:
    """Continuous ``(x, y, z)`` voxel indices of patient-space points (N, 3) on ``image``."""
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    out: np.ndarray = np.linalg.solve(direction, (points_mm - origin).T).T / spacing
    return out
