"""The annotation server: a small JSON API over a :class:`Project`, and the page that uses it.

Every request names a video by its project id and a frame by its position (0 .. frames-1). Frames travel as
JPEG at display size, masks as COCO RLE, updates of long jobs as server-sent events. Single-frame edits
(clicks, box, brush, new object, relabel, merge, delete, approvals, undo, redo) answer synchronously;
propagation and auto-labelling run as jobs (:mod:`segvlm.annotate.jobs`).

Safety: the server reads only the project's media and writes only under its folder; off loopback every
request needs the token printed in the URL; bodies are bounded; a malformed request gets a 4xx with a
message, an unexpected failure a 500 with no traceback (the traceback goes to the server log).
"""

from __future__ import annotations

import io
import json
import logging
import queue
import secrets
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from segvlm.annotate.drift import track_warnings
from segvlm.annotate.jobs import BusyError, EventHub, JobRunner
from segvlm.annotate.project import Project, ProjectError
from segvlm.errors import SegvlmError

log = logging.getLogger("segvlm.annotate")
MAX_BODY_BYTES = 4 * 1024 * 1024
TOKEN_COOKIE = "segvlm_token"

Point = tuple[float, float]


class Stroke(BaseModel):
    """A brush or eraser stroke: a polyline in original-frame pixels drawn with a round brush."""

    points: list[Point] = Field(min_length=1, max_length=20_000)
    radius: float = Field(ge=0.5, le=1000)
    erase: bool = False


class EditRequest(BaseModel):
    """One edit from the page; which fields matter depends on ``action``."""

    action: Literal[
        "add_points", "add_box", "paint", "add_object", "relabel", "merge", "delete", "lock", "unlock", "undo", "redo"
    ]
    frame: int = Field(0, ge=0)
    track_id: int | None = None
    points: list[Point] = Field(default_factory=list, max_length=1000)
    labels: list[Literal[0, 1]] = Field(default_factory=list, max_length=1000)
    box: tuple[float, float, float, float] | None = None
    strokes: list[Stroke] = Field(default_factory=list, max_length=500)
    label: str | None = Field(None, max_length=200)
    into: int | None = None
    last_frame: int | None = Field(None, ge=0)
    from_here: bool = False
    seconds: float = Field(0.0, ge=0, le=3600)


class PropagateRequest(BaseModel):
    frame: int = Field(ge=0)
    track_id: int | None = None  # None: every track
    direction: Literal["forward", "backward", "both"] = "forward"


class QueryRequest(BaseModel):
    query: str = Field(min_length=1, max_length=2000)


class FrameRequest(BaseModel):
    frame: int = Field(ge=0)


class ExportRequest(BaseModel):
    format: str = Field(min_length=1, max_length=40)


def object_json(obj: Any, position: int) -> dict[str, Any] | None:
    if obj is None:
        return None
    return {
        "track_id": obj.track_id,
        "label": obj.label,
        "score": round(float(obj.score), 4),
        "box": [round(float(v), 2) for v in obj.box_xyxy],
        "rle": obj.rle.to_coco(),
        "position": position,
    }


def rasterise(strokes: list[Stroke], height: int, width: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(add, erase) (H, W) bool masks from brush strokes, drawn in order (later strokes win where they cross)."""
    from PIL import Image, ImageDraw

    add = Image.new("L", (width, height), 0)
    erase = Image.new("L", (width, height), 0)
    for stroke in strokes:
        for canvas, value in ((add, 0 if stroke.erase else 1), (erase, 1 if stroke.erase else 0)):
            draw = ImageDraw.Draw(canvas)
            r = stroke.radius
            for x, y in stroke.points:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=value)
            if len(stroke.points) > 1:
                draw.line(stroke.points, fill=value, width=max(int(round(2 * r)), 1), joint="curve")
    added, erased = np.asarray(add, dtype=bool), np.asarray(erase, dtype=bool)  # (H, W) each
    return (added if added.any() else None), (erased if erased.any() else None)


@dataclass
class VideoState:
    """What the server caches per video: a change counter, encoded frames, mask areas, the last timeline."""

    version: int = 0
    jpegs: OrderedDict = field(default_factory=OrderedDict)
    areas: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)
    timeline: tuple[int, dict] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class AnnotationServer:
    """The project, its jobs and events, and the FastAPI app over them (``.app``)."""

    def __init__(
        self,
        project: Project,
        token: str | None = None,
        query: str | None = None,
        allowed_hosts: list[str] | None = None,
    ):
        """``allowed_hosts``: the Host headers accepted (the CLI passes the loopback names when it binds to
        loopback, so that a page on another site cannot reach the API through DNS rebinding); None accepts any."""
        self.project = project
        self.token = token
        self.query = query
        self.allowed_hosts = allowed_hosts
        self.hub = EventHub()
        self.jobs = JobRunner(self.hub)
        self.states = {item_id: VideoState() for item_id in project.items}
        self._displays: dict[str, Any] = {}  # a FrameStore per video for the page, apart from propagation's
        self._displays_lock = threading.Lock()
        self.app = self._build()

    def display_frames(self, video: str) -> Any:
        """Frames for the page's JPEGs, decoded apart from the session's (scrubbing never slows propagation)."""
        from segvlm.frames import FrameStore

        with self._displays_lock:
            store = self._displays.get(video)
            if store is None:
                session = self.project.session(video)
                store = FrameStore.open(self.project.item(video).source, stride=session.result.info.stride)
                self._displays[video] = store
            return store

    def shutdown(self) -> None:
        """Cancel running jobs, wait for them, then snapshot and release every session."""
        for video in list(self.project.items):
            self.jobs.cancel(video)
            self.jobs.wait(video, timeout=120)
        with self._displays_lock:
            for store in self._displays.values():
                store.close()
            self._displays.clear()
        self.project.close()

    # -- helpers --------------------------------------------------------------------------------------------
    def state(self, video: str) -> VideoState:
        self.project.item(video)
        return self.states.setdefault(video, VideoState())

    def changed(self, video: str) -> None:
        self.state(video).version += 1

    def session(self, video: str) -> Any:
        job = self.jobs.current(video)
        if job is not None and job.kind == "autolabel":
            raise BusyError(f"{video} is being auto-labelled; wait for it or cancel it (Esc)")
        return self.project.session(video)

    def idle(self, video: str) -> None:
        """Refuse while a job runs on the video (edits and exports must not interleave with it)."""
        job = self.jobs.current(video)
        if job is not None:
            raise BusyError(
                f"{video} is busy: {job.kind} {job.done}/{job.total or '?'} frames; wait for it or cancel it (Esc)"
            )

    def video_json(self, video: str) -> dict[str, Any]:
        session = self.project.session(video)
        result = session.result
        job = self.jobs.current(video)
        return {
            "id": video,
            "source": Path(self.project.item(video).source).name,
            "frames": len(result),
            "width": result.info.width,
            "height": result.info.height,
            "fps": result.info.fps,
            "frame_indices_start": result[0].frame_index if len(result) else 0,
            "stride": result.info.stride,
            "query": result.query,
            "tracks": [{"id": t, "label": session._track_info(t)[0]} for t in session.track_ids],
            "can_undo": session.can_undo,
            "can_redo": session.can_redo,
            "job": job.to_json() if job else None,
            "version": self.state(video).version,
        }

    def frame_objects(self, video: str, position: int) -> list[dict[str, Any]]:
        result = self.project.session(video).result
        if not 0 <= position < len(result):
            raise KeyError(f"frame {position} is out of range: this video has frames 0..{len(result) - 1}")
        return [object_json(obj, position) for obj in result[position].objects]

    def jpeg(self, video: str, position: int, max_side: int) -> bytes:
        state = self.state(video)
        key = (position, max_side)
        with state.lock:
            if key in state.jpegs:
                state.jpegs.move_to_end(key)
                return state.jpegs[key]
        from PIL import Image

        frames = self.display_frames(video)
        if not 0 <= position < len(frames):
            raise KeyError(f"frame {position} is out of range: this video has frames 0..{len(frames) - 1}")
        image = Image.fromarray(frames[position])
        scale = max_side / max(image.size)
        if scale < 1:
            image = image.resize((max(round(image.width * scale), 1), max(round(image.height * scale), 1)))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        data = buffer.getvalue()
        with state.lock:
            state.jpegs[key] = data
            while len(state.jpegs) > 256:
                state.jpegs.popitem(last=False)
        return data

    def timeline(self, video: str) -> dict[str, Any]:
        """Per track: runs of frames with a mask, prompted and approved positions, drift warnings.

        One pass over the frames; mask areas are cached per mask object (a weak cache: a replaced mask's entry
        goes with it), so after an edit only the changed masks are measured again.
        """
        state = self.state(video)
        version = state.version  # read first: a change during the computation makes the next call recompute
        cached = state.timeline
        if cached is not None and cached[0] == version:
            return cached[1]
        session = self.project.session(video)
        result = session.result
        frame_area = max(result.info.height * result.info.width, 1)
        count = len(result)
        ids = session.track_ids
        areas: dict[int, list[int | None]] = {t: [None] * count for t in ids}
        scores: dict[int, list[float | None]] = {t: [None] * count for t in ids}
        for position, frame in enumerate(result):
            for obj in frame.objects:
                if obj.track_id not in areas:
                    continue
                area = state.areas.get(obj)
                if area is None:
                    area = state.areas[obj] = obj.area
                areas[obj.track_id][position] = area
                scores[obj.track_id][position] = obj.score
        tracks = []
        for track_id in ids:
            runs, start = [], None
            for position, area in enumerate([*areas[track_id], None]):
                if area is not None and start is None:
                    start = position
                elif area is None and start is not None:
                    runs.append([start, position - 1])
                    start = None
            tracks.append(
                {
                    "id": track_id,
                    "label": session._track_info(track_id)[0],
                    "runs": runs,
                    "prompts": [
                        {"position": result.position_of(index), "source": prompt.source}
                        for index, prompt in session.prompts(track_id).items()
                    ],
                    "locks": [result.position_of(index) for index in session.locked(track_id)],
                    "warnings": [
                        {"position": w.position, "kind": w.kind, "detail": w.detail}
                        for w in track_warnings(areas[track_id], scores[track_id], frame_area)
                    ],
                }
            )
        data = {"frames": count, "version": version, "tracks": tracks}
        state.timeline = (version, data)
        return data

    # -- edits ----------------------------------------------------------------------------------------------
    def edit(self, video: str, request: EditRequest) -> dict[str, Any]:
        self.idle(video)
        session = self.session(video)
        result = session.result
        if request.frame >= len(result):
            raise KeyError(f"frame {request.frame} is out of range: this video has frames 0..{len(result) - 1}")
        index = result[request.frame].frame_index
        track = request.track_id
        common = {"seconds": request.seconds}
        action = request.action
        if action == "add_points":
            edit = session.add_points(
                self._track(track), index, request.points, request.labels, propagate="none", **common
            )
        elif action == "add_box":
            edit = session.add_box(self._track(track), index, self._box(request), propagate="none", **common)
        elif action == "paint":
            add, erase = rasterise(request.strokes, result.info.height, result.info.width)
            if add is None and erase is None:
                raise ValueError("a paint edit needs at least one stroke")
            strokes = len(request.strokes)
            edit = session.paint(
                self._track(track), index, add=add, erase=erase, strokes=strokes, propagate="none", **common
            )
        elif action == "add_object":
            label = (request.label or "object").strip() or "object"
            if request.strokes:
                add, _ = rasterise(request.strokes, result.info.height, result.info.width)
                if add is None:
                    raise ValueError("a new object painted with the eraser only has no pixels; use the brush")
                edit = session.add_object(index, mask=add, label=label, propagate="none", **common)
            else:
                edit = session.add_object(
                    index,
                    box=request.box,
                    points=request.points,
                    labels=request.labels,
                    label=label,
                    propagate="none",
                    **common,
                )
        elif action == "relabel":
            edit = session.relabel(self._track(track), request.label or "", **common)
        elif action == "merge":
            if request.into is None:
                raise ValueError("merge needs 'into': the id of the track to merge into")
            edit = session.merge(self._track(track), request.into, **common)
        elif action == "delete":
            edit = session.delete(self._track(track), index if request.from_here else None, **common)
        elif action in ("lock", "unlock"):
            last = None
            if request.last_frame is not None:
                if request.last_frame >= len(result):
                    raise KeyError(f"frame {request.last_frame} is out of range (0..{len(result) - 1})")
                last = result[request.last_frame].frame_index
            method = session.lock if action == "lock" else session.unlock
            edit = method(self._track(track), index, last)
        elif action == "undo":
            edit = session.undo()
        else:
            edit = session.redo()
        self.changed(video)
        changed = [] if edit is None else [result.position_of(i) for i in edit.frame_indices]
        return {
            "edit": None
            if edit is None
            else {"action": edit.action, "track_id": edit.track_id, "frames": changed, "seq": edit.seq},
            "objects": self.frame_objects(video, request.frame),
            "can_undo": session.can_undo,
            "can_redo": session.can_redo,
            "version": self.state(video).version,
        }

    @staticmethod
    def _track(track: int | None) -> int:
        if track is None:
            raise ValueError("this edit needs 'track_id': select an object first")
        return track

    @staticmethod
    def _box(request: EditRequest) -> tuple[float, float, float, float]:
        if request.box is None:
            raise ValueError("add_box needs 'box': [x0, y0, x1, y1] in frame pixels")
        return request.box

    def propagate(self, video: str, request: PropagateRequest) -> dict[str, Any]:
        session = self.session(video)
        result = session.result
        if request.frame >= len(result):
            raise KeyError(f"frame {request.frame} is out of range: this video has frames 0..{len(result) - 1}")
        tracks = [request.track_id] if request.track_id is not None else session.track_ids
        for track in tracks:
            session._check_track(track)
        if not tracks:
            raise ValueError("there is no object to propagate; add one first (N, then click on it)")
        index = result[request.frame].frame_index
        total = sum(len(session.reach(track, index, request.direction)) for track in tracks)

        def work(job) -> str:
            def on_frame(frame_index: int, track_id: int, obj: Any) -> None:
                position = result.position_of(frame_index)
                job.done += 1
                self.changed(video)
                self.hub.publish(
                    video,
                    {
                        "type": "frame",
                        "position": position,
                        "track_id": track_id,
                        "object": object_json(obj, position),
                        "job": job.id,
                        "done": job.done,
                        "total": job.total,
                    },
                )

            frames = 0
            for track in tracks:
                if job.cancel.is_set():
                    break
                edit = session.propagate(track, index, request.direction, on_frame=on_frame, cancel=job.cancel)
                frames += len(edit.frame_indices)
            self.changed(video)
            return f"{frames} masks changed"

        job = self.jobs.start(video, "propagate", total, work)
        return {"job": job.to_json()}

    def autolabel(self, video: str, query: str) -> dict[str, Any]:
        session = self.project.session(video)
        if session.track_ids:
            raise ProjectError(
                f"{video} already has objects; auto-label runs on a video without any (undo or delete them first)"
            )
        item = self.project.item(video)
        total = len(session.result)

        def work(job) -> str:
            from segvlm.tracking import StopPipeline

            def on_frame(frame_result: Any, progress: Any) -> None:
                if job.cancel.is_set():
                    raise StopPipeline()
                job.done = progress.frames_done
                position = progress.frames_done - 1
                self.hub.publish(
                    video,
                    {
                        "type": "autolabel_frame",
                        "position": position,
                        "objects": [object_json(obj, position) for obj in frame_result.objects],
                        "job": job.id,
                        "done": job.done,
                        "total": job.total,
                    },
                )

            result = self.project.pipe(query, item.source, on_frame=on_frame)
            if not result.query:
                result.query = query
            session.adopt(result)  # one undoable edit; frames not reached (cancelled) stay empty
            self.changed(video)
            return f"{len(result.track_ids)} objects found"

        job = self.jobs.start(video, "autolabel", total, work)
        return {"job": job.to_json()}

    def export(self, video: str, format_name: str) -> dict[str, Any]:
        from segvlm.export.registry import get_format

        fmt = get_format(format_name)
        if not fmt.writes_files:
            raise ValueError(f"the {fmt.name!r} format is a Python value; choose a file format")
        self.idle(video)
        session = self.session(video)
        out = self.project.export_folder(video) / fmt.name
        session.save()
        written = session.export(fmt.name, out)
        effort = [vars(e) for e in session.effort()]
        (out / "effort.json").write_text(json.dumps({"video": video, "tracks": effort}, indent=1))
        base = self.project.export_folder(video)
        files = sorted(str(Path(path).resolve().relative_to(base)) for path in [*written, out / "effort.json"])
        return {"format": fmt.name, "folder": str(out), "files": files}

    def export_file(self, video: str, relative: str) -> Path:
        base = self.project.export_folder(video).resolve()
        path = (base / relative).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            raise KeyError(f"no exported file {relative!r} for {video}; export first")
        return path

    # -- the app --------------------------------------------------------------------------------------------
    def _build(self) -> Any:
        import inspect

        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
        from fastapi.staticfiles import StaticFiles

        from segvlm.corrections import CorrectionError

        options: dict[str, Any] = {}
        if "max_body_size" in inspect.signature(FastAPI.__init__).parameters:  # bounds chunked bodies too
            options["max_body_size"] = MAX_BODY_BYTES
        app = FastAPI(
            title="segvlm annotate", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json", **options
        )
        static = resources.files("segvlm.annotate") / "static"

        @app.middleware("http")
        async def guard(request: Request, call_next):
            host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
            if self.allowed_hosts is not None and host not in self.allowed_hosts:
                return JSONResponse({"error": f"unexpected Host {host!r}; open the URL the server printed"}, 421)
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                return JSONResponse({"error": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
            if request.method == "POST" and not request.headers.get("content-type", "").startswith("application/json"):
                # Another site's page can send a "simple" form POST, never a JSON one without asking first.
                return JSONResponse({"error": "POST bodies are JSON: send Content-Type: application/json"}, 415)
            if self.token is not None:
                given = (
                    request.query_params.get("token")
                    or request.headers.get("x-segvlm-token")
                    or request.cookies.get(TOKEN_COOKIE)
                    or ""
                )
                if not secrets.compare_digest(given.encode(), self.token.encode()):
                    return JSONResponse(
                        {"error": "this server needs its token: open the URL it printed (…/?token=...)"},
                        status_code=401,
                    )
            response = await call_next(request)
            if self.token is not None and request.query_params.get("token") == self.token:
                response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            return response

        def error(status: int, message: str) -> JSONResponse:
            return JSONResponse({"error": message}, status_code=status)

        @app.exception_handler(RequestValidationError)
        async def invalid(request: Request, exc: RequestValidationError):
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', [])[1:]) or 'body'}: {e.get('msg')}" for e in exc.errors()
            )
            return error(422, f"malformed request: {problems}")

        @app.exception_handler(BusyError)
        async def busy(request: Request, exc: BusyError):
            return error(409, str(exc))

        @app.exception_handler(CorrectionError)
        async def refused(request: Request, exc: CorrectionError):
            return error(409, str(exc))

        @app.exception_handler(KeyError)
        async def missing(request: Request, exc: KeyError):
            return error(404, str(exc.args[0]) if exc.args else "not found")

        @app.exception_handler(SegvlmError)
        async def user_error(request: Request, exc: SegvlmError):
            return error(400, str(exc))

        @app.exception_handler(ValueError)
        async def bad_value(request: Request, exc: ValueError):
            return error(400, str(exc))

        @app.exception_handler(Exception)
        async def unexpected(request: Request, exc: Exception):
            log.exception("request %s failed", request.url.path)
            return error(500, f"internal error ({type(exc).__name__}); the server log has the details")

        @app.get("/", response_class=HTMLResponse)
        def index() -> Any:
            return HTMLResponse((static / "index.html").read_text())

        app.mount("/static", StaticFiles(directory=str(static)), name="static")

        @app.get("/api/project")
        def project_json() -> Any:
            from segvlm.export.registry import list_formats

            return {
                "videos": [
                    {"id": item.id, "name": Path(item.source).name, "kind": item.kind}
                    for item in self.project.items.values()
                ],
                "query": self.query,
                "formats": [{"name": f.name, "description": f.description} for f in list_formats() if f.writes_files],
            }

        @app.get("/api/videos/{video}")
        def video_json(video: str) -> Any:
            return self.video_json(video)

        @app.get("/api/videos/{video}/frames/{position}.jpg")
        def frame(video: str, position: int, size: int = 1280) -> Any:
            data = self.jpeg(video, position, min(4096, max(64, size)))
            return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

        @app.get("/api/videos/{video}/masks/{position}")
        def masks(video: str, position: int) -> Any:
            return {
                "position": position,
                "version": self.state(video).version,
                "objects": self.frame_objects(video, position),
            }

        @app.get("/api/videos/{video}/timeline")
        def timeline(video: str) -> Any:
            return self.timeline(video)

        @app.post("/api/videos/{video}/edit")
        def edit(video: str, request: EditRequest) -> Any:
            return self.edit(video, request)

        @app.post("/api/videos/{video}/propagate")
        def propagate(video: str, request: PropagateRequest) -> Any:
            return self.propagate(video, request)

        @app.post("/api/videos/{video}/autolabel")
        def autolabel(video: str, request: QueryRequest) -> Any:
            return self.autolabel(video, request.query)

        @app.post("/api/videos/{video}/cancel")
        def cancel(video: str) -> Any:
            job = self.jobs.cancel(video)
            return {"job": job.to_json() if job else None}

        @app.post("/api/videos/{video}/warm")
        def warm(video: str, request: FrameRequest) -> Any:
            if self.jobs.current(video) is None:
                session = self.project.session(video)
                if request.frame < len(session.result):
                    session.warm(session.result[request.frame].frame_index)
            return {"ok": True}

        @app.post("/api/videos/{video}/export")
        def export(video: str, request: ExportRequest) -> Any:
            return self.export(video, request.format)

        @app.get("/api/videos/{video}/exports/{relative:path}")
        def download(video: str, relative: str) -> Any:
            return FileResponse(self.export_file(video, relative))

        @app.get("/api/videos/{video}/effort")
        def effort(video: str) -> Any:
            return {"tracks": [vars(e) for e in self.project.session(video).effort()]}

        @app.get("/api/videos/{video}/events")
        def events(video: str) -> Any:
            self.project.item(video)
            subscriber = self.hub.subscribe(video)

            def stream():
                try:
                    yield "retry: 1000\n\n"
                    while True:
                        try:
                            event = subscriber.get(timeout=15)
                        except queue.Empty:
                            if not self.hub.subscribed(video, subscriber):
                                return  # dropped for falling behind: the page reconnects and reloads
                            yield ": keep-alive\n\n"
                            continue
                        yield f"data: {json.dumps(event)}\n\n"
                finally:
                    self.hub.unsubscribe(video, subscriber)

            return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

        return app


def serve(server: AnnotationServer, host: str, port: int) -> None:  # pragma: no cover - runs until interrupted
    """Run the app with uvicorn until interrupted; sessions are snapshotted and released on the way out."""
    import uvicorn

    config = uvicorn.Config(server.app, host=host, port=port, log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run()
    finally:
        server.shutdown()
