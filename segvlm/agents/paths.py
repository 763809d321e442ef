"""Confine every path an agent passes to a set of root folders.

An LLM chooses the paths, so each one is resolved (``..`` collapsed, symlinks followed) before it is
compared with the roots: ``/etc/passwd``, ``../secrets`` and a symlink that points out of a root are all
refused with a message naming the allowed folders. Relative paths are taken relative to the first root, not
to the process's working directory.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from langchain_core.tools import ToolException

from segvlm.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES

_MEDIA_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


class PathGuard:
    """Resolves agent-given paths inside ``roots`` and makes output folders inside ``output_dir``.

    Args:
        roots: allowed folders; each must exist.
        output_dir: where per-call output folders go; default ``<first root>/segvlm_outputs``. It must lie
            inside a root (checked here, so a bad configuration fails when the tools are built).
    """

    def __init__(self, roots: list[str | Path], output_dir: str | Path | None = None):
        resolved = []
        for root in roots:
            path = Path(root).expanduser().resolve()
            if not path.is_dir():
                raise ValueError(f"agent tool root {root!r} is not an existing folder; create it or fix the path")
            resolved.append(path)
        self.roots: list[Path] = resolved
        output = Path(output_dir).expanduser() if output_dir is not None else self.roots[0] / "segvlm_outputs"
        if not output.is_absolute():
            output = self.roots[0] / output
        output = output.resolve()
        if not self._inside(output):
            raise ValueError(
                f"output_dir {str(output)!r} is outside the tool roots {self._roots_text()}; put it inside a root"
            )
        self.output_dir = output

    # -- checks -------------------------------------------------------------------------------------------
    def _inside(self, path: Path) -> bool:
        return any(path == root or path.is_relative_to(root) for root in self.roots)

    def _roots_text(self) -> str:
        return ", ".join(str(root) for root in self.roots)

    def resolve(self, raw: str) -> Path:
        """The resolved path of ``raw`` if it lies inside a root (it need not exist); else a ToolException."""
        text = (raw or "").strip()
        if not text:
            raise ToolException("the path is empty; pass a file path relative to the allowed folder")
        given = Path(text)
        candidate = given if given.is_absolute() else self.roots[0] / given
        resolved = candidate.resolve()  # collapses '..' and follows symlinks, also of missing tails
        if not self._inside(resolved):
            raise ToolException(
                f"access denied: {text!r} resolves to {resolved}, outside the allowed folder(s) {self._roots_text()}; "
                "use a path inside them (relative paths are resolved against the first one)"
            )
        return resolved

    def existing(self, raw: str, kinds: str = "image or video") -> Path:
        """Like :meth:`resolve`, and the path must exist; a missing one is reported with nearby media files."""
        path = self.resolve(raw)
        if path.exists():
            return path
        nearby = self.media_near(path.parent)
        hint = f"; media files there: {nearby}" if nearby else ""
        raise ToolException(f"no such file: {raw!r} (looked for {self.display(path)}); pass an existing {kinds}{hint}")

    def media_near(self, folder: Path, limit: int = 10) -> list[str]:
        """Up to ``limit`` image/video files in ``folder`` (inside a root), as display paths."""
        if not folder.is_dir() or not self._inside(folder.resolve()):
            return []
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in _MEDIA_SUFFIXES and p.is_file())
        return [self.display(p) for p in found[:limit]]

    def display(self, path: Path) -> str:
        """How a path is shown to the agent: relative to the first root when inside it (so it can be passed
        back as is), absolute otherwise."""
        try:
            return path.relative_to(self.roots[0]).as_posix()
        except ValueError:
            return str(path)

    # -- outputs ------------------------------------------------------------------------------------------
    def new_output_folder(self, tool: str, source: Path) -> Path:
        """A fresh folder ``<output_dir>/<tool>-<source stem>-<random>`` for one call's files."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if not self._inside(self.output_dir.resolve()):
            raise ToolException(f"the output folder {self.output_dir} now points outside the allowed folders")
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.stem)[:40] or "input"
        return Path(tempfile.mkdtemp(prefix=f"{tool}-{stem}-", dir=self.output_dir))
