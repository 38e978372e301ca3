"""The web page at ``/``: plain HTML, CSS and JavaScript served from the package; nothing from the internet."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    """The page that draws a live search tree."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


def install_web(app: FastAPI) -> None:
    """The page at ``/`` and its files under ``/static/`` (Starlette's ``StaticFiles``: only what is in
    ``service/web/static``; a path that leaves it, or names nothing there, is a 404)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
