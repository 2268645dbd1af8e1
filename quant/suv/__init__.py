"""SUV: PET header conventions, scan start and decay, nuclides, tracers and the SUV factors."""
