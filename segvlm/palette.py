"""The colours segvlm draws objects in, in one place: overlays and exports colour object ``n`` with
``PALETTE[(n - 1) % len(PALETTE)]``, Set-of-Mark prompts colour mark ``k`` with ``MARK_PALETTE[k % 12]``.

The colours are well separated (RGB, from Sasha Trubetzkoy's list of 20 distinct colours), so neighbouring
objects stay apart. The mark palette is the palette's first thirteen without the yellow: the colours marks have
always had, so prompts (and the experiments that measured them) stay as they were. The annotation page
(``segvlm/annotate/static/app.js``) draws objects in the same :data:`PALETTE`, in its own copy.
"""

from __future__ import annotations

RGB = tuple[int, int, int]

#: object colours of overlays and exports, by track id
PALETTE: tuple[RGB, ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
)

#: mark colours of Set-of-Mark prompts, by mark position: the palette's first thirteen without the yellow
MARK_PALETTE: tuple[RGB, ...] = PALETTE[:2] + PALETTE[3:13]
