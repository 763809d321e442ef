"""An Ultralytics YOLO segmentation dataset: images, one polygon per object per frame, and ``data.yaml``.

Layout (what ``yolo segment train data=<out>/data.yaml`` reads)::

    images/train/{stem}_{frame_index:06d}.jpg   the processed frames, JPEG quality 95
    labels/train/{stem}_{frame_index:06d}.txt   one line per object: class_id x1 y1 x2 y2 ... (normalised)
    data.yaml                                   path, train, val (= train), names {0: label, ...}

Classes are the grounded phrases, then any other label, in order of first appearance. A frame without
objects gets an empty label file (Ultralytics' convention for background images).

Polygons come from an exact boundary tracer (numpy, no OpenCV): every outer boundary is followed along
pixel corners, so a polygon's vertices are pixel-corner coordinates and filling it covers exactly the
pixels of its component (a vertex at ``x = W`` becomes 1.0). Diagonally touching pixels are separate
components. The boundary is then simplified with Douglas-Peucker at ``TOLERANCE`` = 0.7 pixels: just
under the sqrt(2)/2 by which a one-pixel staircase step stands off its chord, so small objects keep every
step while straight and gently curved runs collapse to a few vertices. A component whose simplified
polygon would collapse keeps its exact one.

Limits of the format, and what this writer does about them:
    * Holes are lost: a YOLO polygon has no holes, so each component is written as its outer boundary
      (islands inside a hole disappear into the filled component).
    * One polygon per line: an object with several components is joined into one polygon the way
      Ultralytics' own ``merge_multi_segment`` does. Components are chained (largest first, then the
      nearest remaining one by centroid), each linked to the next through their nearest vertices by a
      zero-width bridge walked out and back. Even-odd or non-zero filling gives back every component; a
      rasteriser that also paints the outline (PIL, ``cv2.fillPoly``) paints the bridges as one-pixel lines.
    * Coordinates are pixel corners, COCO's convention (``pycocotools.mask.frPyObjects`` fills such a
      polygon back exactly). Rasterisers that round vertices and paint boundary pixels (PIL at 1x,
      ``cv2.fillPoly``, which Ultralytics uses) grow a polygon by up to one pixel on its right and bottom.

On blob-like masks of 100 pixels or more, filling the written polygons at pixel centres gives back the
mask with an IoU of at least 0.9 (0.97 or more in practice on ellipses; the tests check the 0.9 bound).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segvlm.export.registry import ExportError, source_stem
from segvlm.types import FrameResult, VideoSegmentation

TOLERANCE = 0.7  # Douglas-Peucker tolerance, pixels: just under a one-pixel step's sqrt(2)/2
GREEDY_LIMIT = 256  # components chained by nearest centroid; the rest in row-major order
JPEG_QUALITY = 95

# Directions along the pixel-corner grid: 0 = east (+x), 1 = south (+y), 2 = west, 3 = north.
_STEPS = np.array([(1, 0), (0, 1), (-1, 0), (0, -1)], dtype=np.int64)  # (4, 2) (dx, dy)


# -- boundary tracing ------------------------------------------------------------------------------------------
def _boundary_edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel side between the mask and the background, directed with the mask on its right (clockwise).

    Returns:
        starts: (E, 2) int64 start corners (x, y).
        directions: (E,) int64 direction codes (see ``_STEPS``).
    """
    padded = np.pad(mask, 1)  # (H + 2, W + 2) bool
    inside = padded[1:-1, 1:-1]  # (H, W)
    starts, directions = [], []
    # For each side: (neighbour pixel is background, start corner offset (dx, dy) from the pixel's top-left).
    sides = (
        (~padded[:-2, 1:-1], (0, 0), 0),  # top side, walked east
        (~padded[1:-1, 2:], (1, 0), 1),  # right side, walked south
        (~padded[2:, 1:-1], (1, 1), 2),  # bottom side, walked west
        (~padded[1:-1, :-2], (0, 1), 3),  # left side, walked north
    )
    for open_side, (dx, dy), direction in sides:
        rows, cols = np.nonzero(inside & open_side)  # (E_side,) each
        starts.append(np.stack([cols + dx, rows + dy], axis=1))  # (E_side, 2)
        directions.append(np.full(len(rows), direction, dtype=np.int64))
    return np.concatenate(starts).astype(np.int64), np.concatenate(directions)


def trace_boundaries(mask: np.ndarray) -> list[np.ndarray]:
    """The outer boundary of every 4-connected component of an (H, W) bool mask, as corner polygons.

    Each polygon is an (N, 2) int64 array of (x, y) pixel corners at its turns, clockwise on screen, closed
    implicitly (last vertex joins the first). Holes are dropped; so are components inside another one's hole.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    starts, directions = _boundary_edges(mask)
    width = mask.shape[1] + 1
    outgoing: dict[int, list[int]] = {}
    for edge, key in enumerate((starts[:, 1] * width + starts[:, 0]).tolist()):
        outgoing.setdefault(key, []).append(edge)
    corner_list, direction_list = starts.tolist(), directions.tolist()
    steps = _STEPS.tolist()
    loop_of = [-1] * len(corner_list)  # loop index of every edge
    loops: list[tuple[np.ndarray, int]] = []  # (polygon, first edge)
    for first in range(len(corner_list)):
        if loop_of[first] >= 0:
            continue
        corners: list[list[int]] = []
        edge, previous = first, None
        while loop_of[edge] < 0:
            loop_of[edge] = len(loops)
            direction = direction_list[edge]
            if direction != previous:
                corners.append(corner_list[edge])
            previous = direction
            (x, y), (dx, dy) = corner_list[edge], steps[direction]
            candidates = outgoing[(y + dy) * width + x + dx]
            if len(candidates) > 1:  # a pinch corner: turn right, staying on the same pixel (4-connectivity)
                right = (direction + 1) % 4
                candidates = sorted(candidates, key=lambda e: direction_list[e] != right)
            edge = candidates[0]  # already traced when the loop is closed
        if direction_list[first] == previous and len(corners) > 1:  # the loop closed mid-run: merge the ends
            corners = corners[1:]
        loops.append((np.asarray(corners, dtype=np.int64).reshape(-1, 2), first))  # (N, 2)
    ends = starts + _STEPS[directions]  # (E, 2)
    loop_of = np.asarray(loop_of)  # (E,)
    twice_area = np.bincount(  # (L,) shoelace over every unit edge of each loop
        loop_of, weights=starts[:, 0] * ends[:, 1] - ends[:, 0] * starts[:, 1], minlength=len(loops)
    )
    outer = np.nonzero(twice_area > 0)[0].tolist()  # clockwise loops are outer boundaries; the rest are holes
    depth = _outer_depth(mask.shape, starts, directions, twice_area[loop_of] > 0)  # (H, W)
    kept = []
    for index in outer:
        polygon, first = loops[index]
        (x, y), direction = corner_list[first], direction_list[first]
        row, col = _pixel_right_of(x, y, direction)
        if depth[row, col] == 1:  # inside its own boundary only: not an island in another component's hole
            kept.append(polygon)
    return kept


def _pixel_right_of(x: int, y: int, direction: int) -> tuple[int, int]:
    """(row, col) of the pixel on the right of the edge leaving corner (x, y) in ``direction``: the mask side."""
    return {0: (y, x), 1: (y, x - 1), 2: (y - 1, x - 1), 3: (y - 1, x)}[direction]


def _outer_depth(
    shape: tuple[int, int], starts: np.ndarray, directions: np.ndarray, selected: np.ndarray
) -> np.ndarray:
    """How many of the selected (outer, clockwise) loops enclose each pixel: an (H, W) int32 winding count.

    A north edge at ``x`` opens an interior to its right on its row, a south edge closes it; a cumulative
    sum along each row turns those steps into the count.
    """
    height, width = shape
    steps = np.zeros((height, width + 1), dtype=np.int32)  # (H, W + 1) per corner column
    north = selected & (directions == 3)
    south = selected & (directions == 1)
    np.add.at(steps, (starts[north, 1] - 1, starts[north, 0]), 1)  # a north edge from (x, y) covers row y - 1
    np.add.at(steps, (starts[south, 1], starts[south, 0]), -1)  # a south edge from (x, y) covers row y
    return np.cumsum(steps, axis=1)[:, :width]  # (H, W)


def _signed_area(polygon: np.ndarray) -> float:
    """Shoelace area of an (N, 2) polygon; positive when clockwise on screen (y down)."""
    x, y = polygon[:, 0].astype(np.float64), polygon[:, 1].astype(np.float64)  # (N,) each
    return float(((x[:-1] * y[1:] - x[1:] * y[:-1]).sum() + x[-1] * y[0] - x[0] * y[-1]) / 2)


def _rolled(polygon: np.ndarray, start: int) -> np.ndarray:
    """The same closed (N, 2) polygon, starting at vertex ``start``."""
    return np.concatenate([polygon[start:], polygon[:start]])


# -- simplification --------------------------------------------------------------------------------------------
def _douglas_peucker(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Keep-mask of an open (N, 2) polyline simplified with Douglas-Peucker; both ends are kept."""
    keep = np.zeros(len(points), dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        first, last = stack.pop()
        if last - first < 2:
            continue
        a, b = points[first], points[last]
        inner = points[first + 1 : last]  # (M, 2)
        chord = b - a
        length = np.hypot(*chord)
        if length == 0:
            distances = np.hypot(*(inner - a).T)  # (M,)
        else:
            distances = np.abs(chord[0] * (inner[:, 1] - a[1]) - chord[1] * (inner[:, 0] - a[0])) / length
        farthest = int(distances.argmax())
        if distances[farthest] > tolerance:
            split = first + 1 + farthest
            keep[split] = True
            stack += [(first, split), (split, last)]
    return keep


def simplify_polygon(polygon: np.ndarray, tolerance: float = TOLERANCE) -> np.ndarray:
    """Douglas-Peucker on a closed (N, 2) polygon: split at vertex 0 and the vertex farthest from it.

    Returns an (M, 2) float64 polygon; the exact one when simplifying would leave fewer than 3 vertices.
    """
    points = polygon.astype(np.float64)
    if len(points) <= 4 or tolerance <= 0:
        return points
    far = int(np.hypot(*(points - points[0]).T).argmax())
    first_half = _douglas_peucker(points[: far + 1], tolerance)  # (far + 1,)
    second_half = _douglas_peucker(np.concatenate([points[far:], points[:1]]), tolerance)  # (N - far + 1,)
    keep = np.concatenate([first_half[:-1], second_half[:-1]])  # (N,)
    simplified = points[keep]
    if len(simplified) < 3 or abs(_signed_area(simplified)) == 0:
        return points
    return simplified


# -- joining components ----------------------------------------------------------------------------------------
def _nearest_pair(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Indices (i, j) of the closest vertices of (N, 2) ``a`` and (M, 2) ``b``, in chunks of ``a``."""
    best, pair = np.inf, (0, 0)
    for offset in range(0, len(a), 1024):
        chunk = a[offset : offset + 1024]  # (n, 2)
        distances = ((chunk[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # (n, M)
        flat = int(distances.argmin())
        i, j = divmod(flat, distances.shape[1])
        if distances[i, j] < best:
            best, pair = distances[i, j], (offset + i, j)
    return pair


def _chain_order(polygons: list[np.ndarray]) -> list[int]:
    """Largest polygon first, then repeatedly the remaining one whose centroid is nearest the last one's.

    Past ``GREEDY_LIMIT`` components (speckle noise) the rest follow in row-major order of their centroids,
    which keeps the cost linear; the bridges get longer, the filled area does not change.
    """
    lengths = np.array([len(p) for p in polygons])  # (K,)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (K,) first vertex of each polygon
    points = np.concatenate(polygons).astype(np.float64)  # (V, 2) all vertices
    following = np.arange(1, len(points) + 1)  # (V,) index of each vertex's successor in its polygon
    following[offsets + lengths - 1] = offsets
    cross = points[:, 0] * points[following, 1] - points[following, 0] * points[:, 1]  # (V,)
    areas = np.abs(np.add.reduceat(cross, offsets))  # (K,) twice the area
    centroids = np.add.reduceat(points, offsets, axis=0) / lengths[:, None]  # (K, 2) vertex means (x, y)
    order = [int(areas.argmax())]
    remaining = np.ones(len(polygons), dtype=bool)  # (K,)
    remaining[order[0]] = False
    while remaining.any() and len(order) < GREEDY_LIMIT:
        distances = ((centroids - centroids[order[-1]]) ** 2).sum(1)  # (K,)
        nearest = int(np.where(remaining, distances, np.inf).argmin())
        order.append(nearest)
        remaining[nearest] = False
    rest = np.nonzero(remaining)[0]
    rest = rest[np.lexsort((centroids[rest, 0], centroids[rest, 1]))]  # by y, then x
    return order + rest.tolist()


def merge_polygons(polygons: list[np.ndarray]) -> np.ndarray:
    """Join closed (N_k, 2) polygons into one (M, 2) polygon with zero-width bridges (Ultralytics' scheme).

    Walk the chain out: the first polygon all the way round, then each middle one from where the previous
    bridge lands to where the next bridge leaves, then the last one all the way round; walk back through
    the middle ones' remaining parts. Every edge is walked once and every bridge once each way.
    """
    if len(polygons) == 1:
        return polygons[0]
    chain = [polygons[k] for k in _chain_order(polygons)]
    leave = [0] * len(chain)  # vertex of polygon k where the bridge to k + 1 starts
    land = [0] * len(chain)  # vertex of polygon k where the bridge from k - 1 ends
    for k in range(len(chain) - 1):
        leave[k], land[k + 1] = _nearest_pair(chain[k], chain[k + 1])
    last = len(chain) - 1
    pieces = [_rolled(chain[0], leave[0]), chain[0][leave[0] : leave[0] + 1]]
    for k in range(1, last):
        rolled = _rolled(chain[k], land[k])  # starts where the bridge from k - 1 lands
        pieces.append(rolled[: (leave[k] - land[k]) % len(rolled) + 1])
    pieces += [_rolled(chain[last], land[last]), chain[last][land[last] : land[last] + 1]]
    for k in range(last - 1, 0, -1):
        rolled = _rolled(chain[k], land[k])
        pieces += [rolled[(leave[k] - land[k]) % len(rolled) :], rolled[:1]]
    merged = np.concatenate(pieces)  # (M, 2)
    repeated = np.all(merged == np.roll(merged, 1, axis=0), axis=1)  # (M,) same as the previous vertex
    return merged[~repeated]


def mask_to_yolo_polygon(mask: np.ndarray, tolerance: float = TOLERANCE) -> np.ndarray | None:
    """One polygon for an (H, W) mask, in pixel-corner coordinates: an (N, 2) float64 array, None when empty."""
    polygons = [simplify_polygon(p, tolerance) for p in trace_boundaries(mask)]
    if not polygons:
        return None
    return merge_polygons(polygons)


# -- the dataset -----------------------------------------------------------------------------------------------
def class_names(result: VideoSegmentation) -> list[str]:
    """Class names by class id: the grounded phrases, then other labels, in order of first appearance."""
    return list(dict.fromkeys([*result.phrases, *(obj.label for frame in result for obj in frame)]))


def label_lines(frame: FrameResult, classes: dict[str, int], tolerance: float = TOLERANCE) -> list[str]:
    """The label file lines of one frame: ``class_id x1 y1 ...`` with coordinates normalised, 6 decimals."""
    scale = np.array([frame.width, frame.height], dtype=np.float64)  # (2,)
    lines = []
    for obj in frame:
        polygon = mask_to_yolo_polygon(obj.mask, tolerance)
        if polygon is None:
            continue
        normalised = np.clip(polygon / scale, 0.0, 1.0).reshape(-1)  # (2N,) x1 y1 x2 y2 ...
        lines.append(f"{classes[obj.label]} " + " ".join(f"{value:.6f}" for value in normalised))
    return lines


def _write_images(result: VideoSegmentation, video: Any, image_paths: dict[int, Path]) -> None:
    """Read ``video`` with the result's stride and save each processed frame as JPEG; errors name the fix."""
    from PIL import Image

    from segvlm.video import read_frames

    wanted = set(image_paths)
    size = (result.info.height, result.info.width)
    for frame in read_frames(video, stride=result.info.stride):
        if frame.index not in wanted:
            continue
        if frame.image.shape[:2] != size:
            raise ExportError(
                f"the video's frames are {frame.image.shape[0]}x{frame.image.shape[1]} but the result's are "
                f"{size[0]}x{size[1]}; pass video=<the video the result was made from>"
            )
        Image.fromarray(frame.image).save(image_paths[frame.index], quality=JPEG_QUALITY)
        wanted.discard(frame.index)
        if not wanted:
            return
    if wanted:
        missing = sorted(wanted)
        raise ExportError(
            f"the video ended before frames {missing[:5]}{' ...' if len(missing) > 5 else ''} of the result; "
            "pass video=<the video the result was made from>"
        )


def write_yolo(result: VideoSegmentation, out_dir: str | Path, video: Any) -> list[Path]:
    """Write the dataset into ``out_dir`` from the result and its ``video``; returns every file written."""
    import yaml

    out_dir = Path(out_dir).resolve()
    images_dir, labels_dir = out_dir / "images" / "train", out_dir / "labels" / "train"
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    stem = source_stem(result.info.source)
    if stem == "frames" and isinstance(video, (str, Path)):
        stem = source_stem(str(video))
    names = class_names(result)
    classes = {name: index for index, name in enumerate(names)}
    image_paths = {frame.frame_index: images_dir / f"{stem}_{frame.frame_index:06d}.jpg" for frame in result}
    _write_images(result, video, image_paths)
    written: list[Path] = []
    for frame in result:
        label_path = labels_dir / f"{stem}_{frame.frame_index:06d}.txt"
        lines = label_lines(frame, classes)
        label_path.write_text("".join(line + "\n" for line in lines))
        written += [image_paths[frame.frame_index], label_path]
    data = {
        "path": str(out_dir),
        "train": "images/train",
        "val": "images/train",
        "names": dict(enumerate(names)),
    }
    yaml_path = out_dir / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    written.append(yaml_path)
    return written
