"""The HTTP face of `kvlab serve`: OpenAI-compatible routes proxied by ``model``, plus kvlab's control routes.

    GET  /v1/models                       the served models (and their state)
    POST /v1/completions, /v1/chat/completions   proxied to the model's engine (streaming passes through)
    GET  /kvlab/pools                     models (awake/asleep, requests, wakes) and their KV pools
    GET  /kvlab/events                    server-sent events: one such sample every sample_interval
    POST /kvlab/limit {model, limit}      set a model's KV limit (kept across sleeps)
    POST /kvlab/sleep|wake {model}        put a model to sleep or wake it now

With ``api_key`` set, every POST needs ``Authorization: Bearer <key>`` (or ``X-API-Key``): 401 without
one, 403 with a wrong one. Without a key the server refuses to listen beyond 127.0.0.1 (see config.py).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from kvlab import limits, units
from kvlab.pools import PoolSampler

from .config import ServeConfig
from .router import Router, UnknownModel
from .sleep import EngineUnavailable

PROXIED = ("/v1/completions", "/v1/chat/completions")


def _error(status: int, message: str, kind: str, **extra) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status, **extra}}, status_code=status)


def create_app(config: ServeConfig, log_dir=None) -> FastAPI:
    router = Router(config, log_dir=log_dir)

    @asynccontextmanager
    async def lifespan(app):
        app.state.http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0), trust_env=False)
        router.start_monitor()
        try:
            yield
        finally:
            await router.close()
            await app.state.http.aclose()
            sampler.close()

    app = FastAPI(title="kvlab serve", lifespan=lifespan)
    app.state.router = router

    def check_token(request: Request) -> None:
        if config.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key")
        if not token:
            raise HTTPException(401, "this endpoint needs the API key: Authorization: Bearer <key>")
        if not secrets.compare_digest(token.encode(), config.api_key.encode()):
            raise HTTPException(403, "wrong API key")

    @app.exception_handler(UnknownModel)
    async def _unknown(request, exc: UnknownModel):
        return _error(404, str(exc), "model_not_found", models=exc.models)

    @app.exception_handler(EngineUnavailable)
    async def _unavailable(request, exc: EngineUnavailable):
        return _error(503, str(exc), "engine_unavailable")

    @app.get("/health")
    async def health():
        return {"ok": True}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": e.name, "object": "model", "owned_by": "kvlab",
                                            "created": 0, "kvlab_state": e.state}
                                           for e in router.engines.values()]}

    async def proxy(request: Request):
        arrived = time.monotonic()
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON", "invalid_request_error")
        if not isinstance(body, dict) or "model" not in body:
            return _error(400, f"'model' is required; models: {', '.join(router.names)}", "invalid_request_error")
        eng, woke = await router.acquire(body["model"])
        try:
            upstream = await app.state.http.send(
                app.state.http.build_request("POST", eng.url + request.url.path, json=body), stream=True)
        except httpx.HTTPError as e:
            router.release(eng)
            reason = eng.crash_reason() if eng.crashed() else f"{type(e).__name__}: {e}"
            return _error(503, f"engine of {eng.name} did not answer: {reason}", "engine_unavailable")

        async def relay():
            first = True
            try:
                async for chunk in upstream.aiter_raw():
                    if first and woke:
                        eng.ttft_after_wake_ms.append((time.monotonic() - arrived) * 1e3)
                    first = False
                    yield chunk
            finally:
                await upstream.aclose()
                router.release(eng)

        headers = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "cache-control")}
        return StreamingResponse(relay(), status_code=upstream.status_code, headers=headers)

    for path in PROXIED:
        app.add_api_route(path, proxy, methods=["POST"], dependencies=[Depends(check_token)])

    sampler, sampling = PoolSampler(), threading.Lock()  # kvlab top's: devices, pools and map/unmap rates

    def sample() -> dict:
        """kvlab top's snapshot of this fleet's pools (so `kvlab top --url` renders it), plus the models."""
        with sampling:
            snap = sampler.sample()
        fleet = router.status()
        ours = {m["pool"] for m in fleet if m["state"] == "awake"}
        snap["pools"] = [p for p in snap["pools"] if p["name"] in ours]
        by_name = {p["name"]: p for p in snap["pools"]}
        for m in fleet:
            m["kv"] = by_name.get(m["pool"]) if m["state"] == "awake" else None
        snap["models"] = fleet
        return snap

    @app.get("/kvlab/pools")
    async def pools():
        return await asyncio.to_thread(sample)

    @app.get("/kvlab/events")
    async def events(request: Request, interval: float | None = None):
        period = max(0.1, interval or config.sample_interval)  # widgets coalesce to ~10 Hz anyway

        async def stream():
            while not router.closing.is_set() and not await request.is_disconnected():
                yield f"data: {json.dumps(await asyncio.to_thread(sample))}\n\n"
                try:
                    await asyncio.wait_for(router.closing.wait(), timeout=period)
                except asyncio.TimeoutError:
                    pass

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def model_of(request: Request):
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "the request body must be a JSON object")
        return router.engine(body.get("model")), body

    @app.post("/kvlab/limit", dependencies=[Depends(check_token)])
    async def set_limit(request: Request):
        eng, body = await model_of(request)
        if "limit" not in body:
            raise HTTPException(400, "'limit' is required (bytes, a size such as '256MiB', or null)")
        if eng.spec.memory != "elastic":
            raise HTTPException(409, f"{eng.name} runs static memory: it has no KV limit")
        try:
            limit = None if body["limit"] is None else units.parse_size(body["limit"])
        except units.SizeError as e:
            raise HTTPException(400, f"limit: {e}") from None
        if limit is not None and limit < eng.spec.min:
            raise HTTPException(400, f"limit {units.format_size(limit)} is below {eng.name}'s min "
                                     f"{units.format_size(eng.spec.min)}")
        eng.limit = limit
        if eng.pool_name is not None:  # awake: the engine applies it within ~0.1 s; asleep: at its next start
            await asyncio.to_thread(limits.set_limit, eng.pool_name, limit)
        return {"model": eng.name, "limit": limit, "applied": eng.pool_name is not None}

    @app.post("/kvlab/sleep", dependencies=[Depends(check_token)])
    async def sleep(request: Request):
        eng, _ = await model_of(request)
        await router.sleep(eng.name)
        return eng.status()

    @app.post("/kvlab/wake", dependencies=[Depends(check_token)])
    async def wake(request: Request):
        eng, _ = await model_of(request)
        took = await router.wake(eng.name)
        return {**eng.status(), "took_s": took}

    return app
