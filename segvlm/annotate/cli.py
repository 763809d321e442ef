"""``segvlm annotate PATH...`` (the browser tool) and ``segvlm export PROJECT --format F``."""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from segvlm.quiet import command as quiet_command

console = Console(stderr=True)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@quiet_command
def annotate_command(
    paths: Annotated[list[Path], typer.Argument(help="Videos, image folders, or folders of videos.")],
    query: Annotated[str | None, typer.Option(help='Auto-label on open, e.g. "person. car."')] = None,
    preset: Annotated[
        str | None, typer.Option(help="Models: default, cpu-fast, gpu-quality, sam3, tiny-random.")
    ] = None,
    project: Annotated[Path, typer.Option(help="Project folder: sessions and exports are kept here.")] = Path(
        "segvlm-project"
    ),
    host: Annotated[str, typer.Option(help="Interface to listen on; off loopback a token is required.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")] = 8765,
    token: Annotated[str | None, typer.Option(help="Access token (default: random when not on loopback).")] = None,
) -> None:
    """Label videos in the browser: the model segments, you correct with clicks, boxes and a brush."""
    from segvlm.annotate.project import Project
    from segvlm.annotate.server import AnnotationServer, serve
    from segvlm.errors import SegvlmError
    from segvlm.tracking import Pipeline

    if not _loopback(host) and token is None:
        token = secrets.token_urlsafe(16)
    try:
        pipe = Pipeline.from_preset(preset)
        opened = Project.open(project, list(paths), pipe)
    except SegvlmError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    hosts = ["localhost", "127.0.0.1", "::1", host] if _loopback(host) else None  # no DNS rebinding on loopback
    server = AnnotationServer(opened, token=token, query=query, allowed_hosts=hosts)
    if query:
        for item_id in opened.items:
            if not opened.has_session(item_id):
                server.autolabel(item_id, query)
                break  # one at a time; the page starts the others
    shown = "localhost" if _loopback(host) else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    console.print(f"segvlm annotate: {len(opened.items)} video(s), project {opened.folder}")
    typer.echo(f"open {url}")
    serve(server, host, port)


@quiet_command
def export_command(
    project: Annotated[Path, typer.Argument(help="A project folder made by segvlm annotate.")],
    formats: Annotated[
        list[str], typer.Option("--format", "-f", help="coco, png, yolo, ytvis, overlay (repeatable or a,b).")
    ] = ["coco"],  # noqa: B006 - typer reads the default
    out: Annotated[Path | None, typer.Option(help="Output folder (default: PROJECT/exports).")] = None,
) -> None:
    """Export every annotated video of a project in the given formats, with the effort log."""
    import json

    from segvlm.corrections.session import effort_log
    from segvlm.corrections.store import History
    from segvlm.errors import SegvlmError
    from segvlm.export.registry import get_format

    try:
        chosen = [get_format(name.strip()) for value in formats for name in value.split(",") if name.strip()]
        data = json.loads((project / "project.json").read_text())
    except SegvlmError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    except (OSError, ValueError):
        console.print(f"[red]error:[/] {project} is not a project folder (no project.json); run segvlm annotate first")
        raise typer.Exit(2) from None
    target = out or project / "exports"
    count = 0
    for item in data.get("media", []):
        folder = project / "sessions" / item["id"]
        if not (folder / "session.json").is_file():
            continue
        try:
            history, result, _ = History.open(folder)
        except SegvlmError as error:
            console.print(f"[red]error:[/] {error}")
            raise typer.Exit(2) from None
        try:
            effort = [vars(track) for track in effort_log(history.changes())]
            for fmt in chosen:
                destination = target / item["id"] / fmt.name
                result.export(fmt.name, str(destination), video=item["source"])
                (destination / "effort.json").write_text(json.dumps({"video": item["id"], "tracks": effort}, indent=1))
                count += 1
        except SegvlmError as error:
            console.print(f"[red]error:[/] {item['id']}: {error}")
            raise typer.Exit(2) from None
        finally:
            history.close()
    if not count:
        console.print(f"nothing to export: no video of {project} has been annotated yet")
        raise typer.Exit(1)
    typer.echo(f"exported {count} video/format pairs to {target}")
