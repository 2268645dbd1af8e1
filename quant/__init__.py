"""Pure numerical PET quantification: SUV conversion, segmentation and hypoxia figures.

Nothing in this package touches files, the network or the database. Plain numbers, numpy
arrays and SimpleITK images go in; numbers and masks come out. The one exception is the thin
adapter layer (:mod:`quant.suv.pet_header`, :mod:`quant.suv.pet_times`, :mod:`quant.image.volume`)
that
reads attribute values from already-loaded pydicom datasets.
"""
