"""Who needs the key is decided by the routes: every route that carries the management dependency, and only
those, answers 401 without the key, and OpenAPI shows exactly those as protected."""
from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.routing import APIRoute

from app.http.deps import MANAGEMENT_KEY, Managed
from app.security import ManagedRoutes

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
OPEN_TAGS = {"inference", "feedback", "open inference protocol"}  # the unsafe routes anyone may call: inference
# (ours and the Open Inference Protocol's) reads, it changes nothing; feedback writes only events on impressions the
# service signed


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "some-id", path)


def test_every_unsafe_route_outside_inference_needs_the_key(make_client):
    client = make_client()
    routes = [r for r in client.app.routes if isinstance(r, APIRoute)]
    unsafe = [(m, r) for r in routes for m in r.methods if m in UNSAFE and not OPEN_TAGS & set(r.tags)]
    assert len(unsafe) >= 5  # jobs (submit, cancel, delete) and models (activate, delete) at least
    for method, route in unsafe:
        r = client.request(method, _concrete(route.path), headers={"Authorization": ""}, json={})
        assert r.status_code == 401, (method, route.path, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer"


def test_the_key_follows_the_dependency_and_openapi_shows_the_same_set(make_client):
    client = make_client()
    spec = client.get("/openapi.json").json()
    protected = {(m.upper(), path) for path, ops in spec["paths"].items() for m, op in ops.items() if op.get("security")}
    for route in (r for r in client.app.routes if isinstance(r, APIRoute)):
        for method in route.methods - {"HEAD"}:
            r = client.request(method, _concrete(route.path), headers={"Authorization": ""}, json={})
            assert (r.status_code == 401) == ((method, route.path) in protected), (method, route.path, r.status_code)


def test_a_managed_route_anywhere_is_protected_and_only_with_its_methods():
    router = APIRouter()

    @router.post("/reports/{name}/rebuild", dependencies=[Managed])
    async def rebuild(name: str) -> None: ...

    @router.get("/reports/{name}")
    async def read(name: str) -> None: ...

    @router.get("/admin/{a}/{b}", dependencies=[Managed])
    async def admin(a: str, b: str) -> None: ...

    managed = ManagedRoutes.of(router.routes, MANAGEMENT_KEY)
    assert managed.need_key("POST", "/reports/q3/rebuild")
    assert not managed.need_key("GET", "/reports/q3") and not managed.need_key("GET", "/reports/q3/rebuild")
    assert managed.need_key("GET", "/admin/x/y") and managed.need_key("HEAD", "/admin/x/y")
    assert not managed.need_key("GET", "/admin/x") and not managed.need_key("POST", "/admin/x/y")


def test_with_the_key_management_is_reachable(client):
    assert client.get("/jobs").status_code == 200  # the fixture's client sends the key
