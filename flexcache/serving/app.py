"""`flexcache serve`: a reference HTTP serving app whose worker processes share one Redis tier.

Endpoints:

* ``POST /v1/videos`` ``{"prompt": ..., "seed"?, "num_inference_steps"?, "tenant"?, "user"?}`` ->
  202 ``{"id", "status"}``. A malformed body is 422 (the field is named), a
  prompt over `max_prompt_chars` 413, no live worker 503.
* ``GET /v1/videos/{id}`` -> the job's status and, once done, the video
  (base64, with its media type: a GIF for the toy world, MP4 for a real
  model); 404 for an unknown id. Responses never say whether the cache
  served the job, from which step or which entry: that is the operator's
  (``/metrics``).
* ``GET /metrics`` (Prometheus: jobs, and each worker's cache, by worker).
* ``GET /healthz`` -> ``{"status", "reasons", "workers_alive", "workers_ready"}``:
  200 with status ``ok``, or ``degraded`` and the reasons (a worker could not
  start or is not ready yet; a worker's shared tier, event follower, setting
  classifier or store callbacks are failing: `JobManager.health`); 503 with
  ``no worker alive``. A degraded server still serves: the cache fails open.

Needs the serve extra (``pip install 'flexcache[serve]'``: FastAPI, uvicorn,
prometheus-client).
"""

import base64
from typing import Any

from flexcache.core import TENANT_PATTERN, FlexCacheError
from flexcache.serving.jobs import JobManager, NoWorkerError

MAX_PROMPT_CHARS = 2000
MAX_STEPS = 200


def _imports():
    try:
        import fastapi
        import pydantic
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError as exc:
        raise FlexCacheError("flexcache serve needs FastAPI, uvicorn and prometheus-client: "
                             "pip install 'flexcache[serve]'") from exc
    return fastapi, pydantic, CollectorRegistry, generate_latest


def create_app(manager: JobManager, *, cache_name: str = "flexcache", max_prompt_chars: int = MAX_PROMPT_CHARS):
    """The FastAPI app over `manager`'s workers."""
    fastapi, pydantic, CollectorRegistry, generate_latest = _imports()
    from fastapi.responses import JSONResponse, Response

    from flexcache.engine import CacheCollector

    identity = pydantic.constr(pattern=f"^{TENANT_PATTERN.pattern}$", min_length=1, max_length=64)

    class VideoRequest(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        prompt: pydantic.StrictStr
        seed: pydantic.conint(ge=0, le=2**63 - 1) | None = None
        num_inference_steps: pydantic.conint(ge=2, le=MAX_STEPS) | None = None
        tenant: identity | None = None
        user: identity | None = None

    app = fastapi.FastAPI(title="FlexCache reference server")
    registry = CollectorRegistry()
    registry.register(CacheCollector(cache_name=cache_name, sources=lambda: [
        ({"worker": str(index)}, (lambda stats=stats: stats)) for index, stats in sorted(manager.worker_stats.items())]))
    registry.register(_JobsCollector(manager))

    @app.post("/v1/videos", status_code=202)
    def submit(request: VideoRequest) -> dict[str, Any]:
        if not request.prompt.strip():
            raise fastapi.HTTPException(422, detail=[{"loc": ["body", "prompt"], "msg": "prompt is empty"}])
        if len(request.prompt) > max_prompt_chars:
            raise fastapi.HTTPException(413, detail=f"prompt is {len(request.prompt)} characters; the limit is "
                                                    f"{max_prompt_chars}")
        try:
            job = manager.submit(request.prompt, seed=request.seed, steps=request.num_inference_steps,
                                 tenant=request.tenant, user=request.user)
        except NoWorkerError:
            raise fastapi.HTTPException(503, detail="no worker is alive; retry later") from None
        return {"id": job.id, "status": job.status}

    @app.get("/v1/videos/{job_id}")
    def status(job_id: str) -> dict[str, Any]:
        job = manager.get(job_id)
        if job is None:
            raise fastapi.HTTPException(404, detail=f"no job {job_id!r}")
        body = job.public()
        if job.status == "done" and job.video is not None:
            body["video"] = base64.b64encode(job.video).decode()
        return body

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        health = manager.health()
        return JSONResponse(health, status_code=200 if health["workers_alive"] else 503)

    return app


class _JobsCollector:
    """Jobs by status, submissions, retries, worker deaths and hits across workers."""

    def __init__(self, manager: JobManager) -> None:
        self.manager = manager

    def describe(self) -> list:
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        jobs = GaugeMetricFamily("flexcache_serve_jobs", "Jobs the server knows, by status.", labels=["status"])
        for name, count in self.manager.status_counts().items():
            jobs.add_metric([name], count)
        yield jobs
        for key, doc in (("submitted", "Jobs accepted."), ("retried", "Jobs run again after their worker died."),
                         ("worker_deaths", "Worker processes that died."),
                         ("start_failures", "Worker processes that could not start.")):
            yield CounterMetricFamily(f"flexcache_serve_{key}", doc, value=self.manager.counters[key])
        yield GaugeMetricFamily("flexcache_serve_degraded", "1 while /healthz says anything but ok (see its reasons).",
                                value=int(self.manager.health()["status"] != "ok"))
        hits = CounterMetricFamily("flexcache_serve_cross_worker_hits",
                                   "Hits on entries another worker inserted (through the shared tier).",
                                   labels=["worker"])
        for index, stats in sorted(self.manager.worker_stats.items()):
            hits.add_metric([str(index)], stats.get("cross_worker_hits", 0))
        yield hits
