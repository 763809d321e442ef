// COCO run-length encoding, as pycocotools writes it: the compressed counts string, column-major runs.

/** Runs of a compressed COCO RLE string (alternating background / object, starting with background). */
export function decodeCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p += 1;
      k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

/**
 * Paint an RLE mask into a 32-bit RGBA pixel view (row-major, width x height) with one colour.
 * COCO RLE runs down columns (pixel i is at row i % height, column floor(i / height)).
 */
export function paintRle(rle, pixels, width, height, colour) {
  const counts = decodeCounts(rle.counts);
  let index = 0;
  for (let r = 0; r < counts.length; r += 1) {
    const run = counts[r];
    if (r % 2 === 1) {
      for (let i = index; i < index + run; i += 1) {
        const column = (i / height) | 0;
        const row = i - column * height;
        pixels[row * width + column] = colour;
      }
    }
    index += run;
  }
}

/** A boolean mask (Uint8Array, row-major) of an RLE, for hit tests. */
export function rleToMask(rle) {
  const [height, width] = rle.size;
  const mask = new Uint8Array(width * height);
  const counts = decodeCounts(rle.counts);
  let index = 0;
  for (let r = 0; r < counts.length; r += 1) {
    if (r % 2 === 1) {
      for (let i = index; i < index + counts[r]; i += 1) {
        const column = (i / height) | 0;
        mask[(i - column * height) * width + column] = 1;
      }
    }
    index += counts[r];
  }
  return mask;
}
