"""Synthetic PET/CT studies with known truth, the project's own test and demo data.

>>> study = make_study(field_of_view="pelvis", tracer="64Cu-ATSM")
>>> paths = write_study(study, "/tmp/synthetic")  # doctest: +SKIP

See :func:`make_study` for the anatomy and :class:`Truth` for what is known about it.
"""

from service.synthetic.anatomy import FIELDS_OF_VIEW, TRACERS, Tissue
from service.synthetic.images import ct_hu_image, ct_hu_on_pet, pet_suv_image
from service.synthetic.study import SyntheticStudy, Truth, make_study, write_study

__all__ = [
    "FIELDS_OF_VIEW",
    "TRACERS",
    "SyntheticStudy",
    "Tissue",
    "Truth",
    "ct_hu_image",
    "ct_hu_on_pet",
    "make_study",
    "pet_suv_image",
    "write_study",
]
