"""Regions: body landmarks from the CT, the muscle reference, lesion candidates and the
physiological-uptake rules that exclude them."""
