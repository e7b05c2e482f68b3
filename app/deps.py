"""What routes may ask for, as typed dependencies."""
from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from .engine import Engine
from .errors import ApiError
from .registry import Registry
from .settings import Settings


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def require_key(request: Request) -> None:
    """When SEQ2SEQ_API_KEY is set, management needs `Authorization: Bearer <key>`; inference stays open."""
    key = request.app.state.settings.api_key
    if not key:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
        raise ApiError(401, "this endpoint needs the header 'Authorization: Bearer <SEQ2SEQ_API_KEY>'",
                       headers={"WWW-Authenticate": "Bearer"})


EngineDep = Annotated[Engine, Depends(get_engine)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
Authorized = Depends(require_key)
