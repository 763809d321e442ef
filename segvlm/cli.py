"""The ``segvlm`` command line: ``segvlm segment VIDEO QUERY --out DIR`` and friends."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from segvlm.quiet import command as quiet_command
from segvlm.registry import GROUNDERS, SEGMENTERS

app = typer.Typer(
    name="segvlm",
    help="Text-grounded video segmentation: ground a phrase with an open-vocabulary detector, track it with "
    "SAM 2, export COCO RLE masks and an overlay video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


@app.command()
@quiet_command
def segment(
    video: Annotated[str, typer.Argument(help="Video file, image, or folder of frames.")],
    query: Annotated[str, typer.Argument(help='What to segment, e.g. "the red car" or "the dog and the child".')],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for masks.json and overlay.mp4.")],
    preset: Annotated[
        str | None,
        typer.Option(help="Preset: default, cpu-fast, gpu-quality, sam3, tiny-random (see `segvlm presets`)."),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config file (overrides the preset).")] = None,
    grounder: Annotated[
        str | None,
        typer.Option(help=f"Grounder backend: {', '.join(GROUNDERS)}; it brings its own default model."),
    ] = None,
    segmenter: Annotated[
        str | None,
        typer.Option(help=f"Segmenter backend: {', '.join(SEGMENTERS)}; it brings its own default model."),
    ] = None,
    grounder_model: Annotated[
        str | None, typer.Option(help="Grounder checkpoint: a hub id, a local folder or tiny-random:<kind>.")
    ] = None,
    segmenter_model: Annotated[
        str | None, typer.Option(help="Segmenter checkpoint: a hub id, a local folder or tiny-random:<kind>.")
    ] = None,
    grounder_options: Annotated[
        list[str] | None,
        typer.Option(
            "--grounder-option",
            metavar="KEY=VALUE",
            help="A grounder backend option, KEY=VALUE (repeatable), e.g. resize_margin=2",
        ),
    ] = None,
    segmenter_options: Annotated[
        list[str] | None,
        typer.Option(
            "--segmenter-option",
            metavar="KEY=VALUE",
            help="A segmenter backend option, KEY=VALUE (repeatable), e.g. fast=true",
        ),
    ] = None,
    save_frames: Annotated[
        bool,
        typer.Option("--save-frames", help="Also write the processed frames as JPEG under masks.json's file_names."),
    ] = False,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    max_frames: Annotated[int | None, typer.Option(min=1, help="Process at most this many frames.")] = None,
    stride: Annotated[int, typer.Option(min=1, help="Process every N-th frame.")] = 1,
    overlay: Annotated[bool, typer.Option(help="Also write overlay.mp4.")] = True,
    formats: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            "-f",
            help="Export format, repeatable or comma-separated: coco, overlay, png, yolo, ytvis "
            "(default: coco and overlay). Each non-COCO format goes to OUT/<format>/.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(help="Continue a run that was killed, from OUT/run.jsonl (frames are logged as they finish)."),
    ] = False,
) -> None:
    """Segment and track QUERY through VIDEO; write OUT/masks.json (COCO RLE) and OUT/overlay.mp4."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from segvlm.config import load_config
    from segvlm.errors import ConfigError, SegvlmError, VideoReadError
    from segvlm.export.registry import ExportError, get_format
    from segvlm.registry import text_native
    from segvlm.tracking import Pipeline

    wanted = [name.strip().lower() for value in formats or [] for name in value.split(",") if name.strip()]
    try:
        chosen = [get_format(name) for name in wanted]
    except SegvlmError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    if any(not fmt.writes_files for fmt in chosen):
        console.print("[red]error:[/] the supervision format is a Python value; use --format with file formats")
        raise typer.Exit(2)
    names = [fmt.name for fmt in chosen] or ["coco", *(["overlay"] if overlay else [])]
    problem = output_folder_problem(out)
    if problem:
        console.print(f"[red]error:[/] {problem}")
        raise typer.Exit(2)
    checkpoint = out / "run.jsonl"
    if checkpoint.exists() and not resume:
        logged = max(sum(1 for _ in open(checkpoint, "rb")) - 1, 0)
        console.print(
            f"[red]error:[/] {out} holds an unfinished run ({logged} frames logged in {checkpoint.name}); add --resume "
            "to continue it, or choose another --out"
        )
        raise typer.Exit(2)
    if (out / "masks.json").exists():
        console.print(f"[yellow]note:[/] {out}/masks.json exists and will be replaced")
    overrides = {
        stage: {key: value for key, value in (("name", name), ("model", model)) if value}
        for stage, name, model in (("grounder", grounder, grounder_model), ("segmenter", segmenter, segmenter_model))
        if name or model
    }
    try:
        for stage, given in (("grounder", grounder_options), ("segmenter", segmenter_options)):
            if given:
                overrides.setdefault(stage, {})["options"] = parse_option_flags(given, f"--{stage}-option")
        settings = load_config(config or preset, overrides=overrides, device=device)
        if (grounder or grounder_model) and text_native(settings.segmenter.name):
            raise ConfigError(
                f"the {settings.segmenter.name} segmenter finds objects from the text itself, so no grounder runs; "
                "drop --grounder/--grounder-model, or choose a segmenter that tracks a grounder's boxes "
                "(--segmenter sam2)"
            )
        if settings.warning:
            console.print(f"[yellow]warning:[/] {settings.warning}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            runner = Pipeline(settings)
        progress = Progress(
            TextColumn("[bold]segmenting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[fps]:.1f} frames/s"),
            TextColumn("{task.fields[objects]} objects tracked"),
            TimeElapsedColumn(),
            console=console,
        )
        with progress:
            task = progress.add_task("segment", total=max_frames, fps=0.0, objects=0)

            def on_frame(frame, state) -> None:
                progress.update(
                    task,
                    completed=state.frames_done,
                    total=state.frames_total,
                    fps=state.frames_done / max(state.seconds, 1e-9),
                    objects=state.active_tracks,
                )

            try:
                result = runner(
                    query,
                    video,
                    max_frames=max_frames,
                    stride=stride,
                    on_frame=on_frame,
                    checkpoint=checkpoint,
                    resume=resume,
                )
            except VideoReadError as error:
                partial = getattr(error, "partial_result", None)
                if partial is not None and len(partial):
                    partial.save(str(out))
                    console.print(f"[red]error:[/] {error}\nkept the {len(partial)} frames read before it in {out}")
                    raise typer.Exit(1) from None
                raise
        written = []
        for name in names:
            target = out if name in ("coco", "overlay") else out / name
            written += result.export(name, str(target), video=video)
        if save_frames:
            written += write_frames(result, video, out)
        checkpoint.unlink(missing_ok=True)  # the results are saved: the run log has served its purpose
    except ExportError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    except SegvlmError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    tracks = result.tracks()
    if not tracks:
        typer.echo(f"nothing matched {query!r} in {len(result)} frames; wrote an empty result to {out}")
    else:
        shown = sorted({str(path if path.parent == out else path.parent) for path in map(Path, written)})
        typer.echo(f"{len(tracks)} tracks over {len(result)} frames -> {', '.join(shown[:6])}")
        for track in tracks:
            typer.echo(
                f"  #{track.track_id} {track.label}: frames {track.first_frame}-{track.last_frame} "
                f"({len(track)} frames), score {track.mean_score:.2f}"
            )


def parse_option_flags(values: list[str], flag: str) -> dict[str, object]:
    """``["fast=true", "resize_margin=2"]`` as ``{"fast": True, "resize_margin": 2}``: each value is read as YAML
    (``true``, ``2``, ``null``), as it would be in a config file."""
    import yaml

    from segvlm.errors import ConfigError

    options: dict[str, object] = {}
    for item in values:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r} is not KEY=VALUE; write it as {flag} fast=true")
        try:
            options[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"{flag} {item!r}: the value is not readable as YAML; quote it") from None
    return options


def output_folder_problem(out: Path) -> str | None:
    """Why ``out`` cannot take the results (checked before any model loads), or None when it can."""
    import os
    import tempfile

    if out.exists() and not out.is_dir():
        return f"--out {out} is a file; give a folder (it is created if missing)"
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"--out {out} is inside {parent}, which is a file; give a folder path"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write to {parent}: permission denied; choose a folder you can write to with --out"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".segvlm-check-"):
            pass
    except OSError as error:
        return f"cannot write to {out} ({error.strerror or error}); choose another folder with --out"
    return None


def write_frames(result, video: str, out: Path) -> list[str]:
    """Write each processed frame at ``OUT/<file_name>``, the ``file_name`` of its image in masks.json
    (``<video>/<frame index>.jpg``; a still image keeps its own name, see
    :func:`segvlm.export.coco.coco_file_name`), so that COCO tools find the images the annotations refer to.

    The frames are decoded again from ``video`` with the result's stride; returns the paths written. A name
    that leads back to the source itself (a photo segmented with ``--out`` its own folder) is left as it is.
    """
    from PIL import Image

    from segvlm.export.coco import to_coco
    from segvlm.video import read_frames

    names = {image["frame_index"]: image["file_name"] for image in to_coco(result)["images"]}
    written = []
    for frame in read_frames(video, stride=result.info.stride):
        name = names.pop(frame.index, None)
        if name is not None:
            path = out / name
            if path.resolve() == Path(video).resolve():
                continue  # the image is already where masks.json says
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame.image).save(path, quality=95)
            written.append(str(path))
        if not names:
            break
    return written


@app.command()
def presets() -> None:
    """List the presets (and the training configs) that ship with segvlm."""
    from segvlm.config import list_presets, load_config
    from segvlm.registry import text_native
    from segvlm.training.config import list_train_configs

    for name in list_presets():
        settings = load_config(name)
        grounder = f"{settings.grounder.name}:{settings.grounder.model}"
        if text_native(settings.segmenter.name):
            grounder = f"none ({settings.segmenter.name} grounds text itself)"
        typer.echo(
            f"{name:12s} grounder={grounder} "
            f"segmenter={settings.segmenter.name}:{settings.segmenter.model} device={settings.device}"
        )
    typer.echo(f"training configs (segvlm train --config NAME): {', '.join(list_train_configs())}")


def _register_extensions() -> None:
    """Commands whose implementation lives with its feature (imported lazily inside each command)."""
    from segvlm.annotate.cli import annotate_command, export_command
    from segvlm.data.cli import build_dataset_command
    from segvlm.training.cli import train_command

    app.command("build-dataset")(build_dataset_command)
    app.command("train")(train_command)
    app.command("annotate")(annotate_command)
    app.command("export")(export_command)


_register_extensions()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
