"""The service with do-nothing endpoints beside the real ones: same app, middleware, server and worker count,
so a load test can compare /predict and /topk with the cost of the HTTP stack alone.

  python bench/noop_server.py        (reads the same SEQ2SEQ_* settings as the service)
"""
from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from fastapi import Query

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.http.schemas import PredictRequest  # noqa: E402
from app.main import create_app  # noqa: E402
from app.settings import get_settings  # noqa: E402

app = create_app()


@app.post("/noop")
async def noop_post(body: PredictRequest) -> dict:
    return {"ok": True}


@app.get("/noop")
async def noop_get(start: int | None = Query(None), prefix: str | None = Query(None), k: int = Query(3)) -> dict:
    return {"ok": True}


if __name__ == "__main__":
    settings = get_settings()
    uvicorn.run(app, host="127.0.0.1", port=settings.port, log_level="warning", access_log=False)
