"""The display colours of the regions, shared by the SEG, the rendered summary and its legend.

Colours are sRGB triplets in 0..255. They are chosen to stand out on both a greyscale PET and
the "hot" (black-red-yellow-white) PET colour map of the summary: a radiologist who sees the
summary's cyan lesion outline finds the same lesion cyan in a viewer that draws the SEG.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd


@dataclass(frozen=True)
class RegionColour:
    """A region's display colour.

    Attributes
    ----------
    name
        The colour's name as the summary's legend prints it.
    rgb
        sRGB, each channel 0..255.
    """

    name: str
    rgb: tuple[int, int, int]

    def cielab(self) -> hd.color.CIELabColor:
        """The colour as a SEG RecommendedDisplayCIELabValue (highdicom expects 0..255)."""
        return hd.color.CIELabColor.from_rgb(*self.rgb)


LESION = RegionColour("cyan", (0, 255, 255))
MUSCLE = RegionColour("green", (80, 255, 80))
HYPOXIC = RegionColour("magenta", (255, 0, 255))
