"""Segment and track a phrase through a video, print the tracks, write masks, an overlay, and correct a track.

    python examples/segment_video.py VIDEO "the child" --out out/example [--preset tiny-random]

With ``--preset tiny-random`` (the default here) everything runs offline on random-weight models: the
numbers it prints are meaningless but the calls are the real ones. Use ``--preset default`` for real models.
"""

from __future__ import annotations

import argparse
import warnings

import segvlm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("query")
    parser.add_argument("--out", default="out/example")
    parser.add_argument("--preset", default="tiny-random")
    parser.add_argument("--max-frames", type=int, default=16)
    args = parser.parse_args()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tiny-random's "meaningless masks" warning
        pipe = segvlm.Pipeline.from_preset(args.preset)
    result = pipe(args.query, args.video, max_frames=args.max_frames)
    print(f"{len(result)} frames, phrases {result.phrases}")
    for track in result.tracks():
        print(f"track {track.track_id} ({track.label}): frames {track.first_frame}-{track.last_frame}")

    # A person spots a missed object on frame 2 and boxes it; it is tracked forwards and backwards. The
    # session keeps every prompt and can undo; with folder=... it would also save each edit as it happens.
    session = pipe.correct(result, args.video)
    height, width = result.info.height, result.info.width
    edit = session.add_object(2, box=(width * 0.1, height * 0.1, width * 0.4, height * 0.5), label="missed")
    print(f"added track {edit.track_id}: {len(result.track(edit.track_id))} frames")

    result.save(args.out, overlay=True)
    print(f"wrote {args.out}/masks.json and {args.out}/overlay.mp4")


if __name__ == "__main__":
    main()
