"""``segvlm build-dataset``: the dataset builder on the command line, with a rich progress bar.

:func:`build_dataset_command` is a plain function whose defaults are typer options, so an app registers
it with ``app.command("build-dataset")(build_dataset_command)``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from segvlm.quiet import command as quiet_command

_VOCABULARY_HELP = "class names to label everything with: comma-separated, or a file with one name per line"


def parse_vocabulary(value: str) -> list[str]:
    """Class names from ``"cat, dog"`` or from a file with one name per line (``#`` comments allowed)."""
    path = Path(value)
    if path.is_file():
        names = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    else:
        names = [name.strip() for name in value.split(",")]
    names = [name for name in names if name]
    if not names:
        raise typer.BadParameter(f"no class names in {value!r}; give 'cat, dog' or a file with one per line")
    return names


@quiet_command
def build_dataset_command(
    inputs: list[str] = typer.Argument(..., help="videos, images, or folders of them (searched recursively)"),
    out: str = typer.Option(..., "--out", "-o", help="output folder; an unfinished build there is resumed"),
    query: list[str] | None = typer.Option(
        None, "--query", "-q", help="what to segment, e.g. 'red car'; repeat for several phrases"
    ),
    vocabulary: str | None = typer.Option(None, "--vocabulary", help=_VOCABULARY_HELP),
    preset: str | None = typer.Option(None, "--preset", help="pipeline preset (default, cpu-fast, tiny-random...)"),
    device: str | None = typer.Option(None, "--device", help="cuda, cpu... (default: the preset's choice)"),
    stride: int = typer.Option(1, "--stride", min=1, help="label every N-th video frame"),
    max_frames: int | None = typer.Option(None, "--max-frames", min=1, help="at most N frames per video"),
    caption_template: list[str] | None = typer.Option(
        None, "--caption-template", help="caption template over {label}/{phrase}; repeat for variety"
    ),
    image_format: str = typer.Option("jpeg", "--image-format", help="how video frames are stored: jpeg or png"),
    ray: bool = typer.Option(False, "--ray", help="run on Ray Data (an actor pool, one model set per actor)"),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster to join (e.g. auto or ray://head:10001); implies --ray"
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Ray actors (each loads its own models)"),
    labeler: str | None = typer.Option(
        None, "--labeler", help="'module:attr' of a custom labeler, used instead of --preset"
    ),
    no_arrow: bool = typer.Option(False, "--no-arrow", help="write only the parquet shards, not load_from_disk"),
) -> None:
    """Label videos and images with the pipeline and write a Hugging Face dataset (resumable)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from segvlm.data.builder import BuildConfig, BuildMismatchError, build_dataset
    from segvlm.data.labelers import load_labeler
    from segvlm.data.ray_job import RayOptions
    from segvlm.quiet import warn_once

    console = Console(stderr=True)
    try:
        config = BuildConfig(
            query=(query[0] if len(query) == 1 else tuple(query)) if query else None,
            vocabulary=tuple(parse_vocabulary(vocabulary)) if vocabulary else None,
            stride=stride,
            max_frames=max_frames,
            **({"caption_templates": tuple(caption_template)} if caption_template else {}),
            image_format=image_format,
        )
        chosen = load_labeler(labeler) if labeler else None
        if chosen is None:
            from segvlm.config import load_config

            warning = load_config(preset, device=device).warning  # also checks the preset before any work
            if warning:
                warn_once(warning)  # said here too because Ray workers' own warnings never reach this terminal
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(code=2) from None

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("labelling", total=None)

        def on_unit(record, done: int, total: int) -> None:
            skipped = f", {len(record.errors)} skipped" if record.errors else ""
            bar.update(task, completed=done, total=total, description=f"labelling ({record.rows} rows{skipped})")

        try:
            summary = build_dataset(
                inputs,
                out,
                config,
                labeler=chosen,
                preset=preset,
                device=device,
                ray=ray or ray_address is not None,
                ray_options=RayOptions(num_workers=workers, address=ray_address),
                save_arrow=not no_arrow,
                progress=on_unit,
            )
        except (BuildMismatchError, FileNotFoundError, ValueError) as error:
            bar.stop()
            console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(code=2) from None
        bar.update(task, completed=summary.units, total=summary.units, description="done")
    console.print(summary.describe())
    if summary.errors:
        console.print(f"[yellow]{summary.errors} inputs could not be read; see {summary.out / 'errors.jsonl'}[/]")
