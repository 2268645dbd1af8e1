"""Images: PET and CT volumes from datasets, CT-to-PET resampling, and supplied contours (RTSTRUCT,
SEG) on the PET grid."""
