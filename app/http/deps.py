"""What routes may ask for, as typed dependencies."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from ..inference.engine import Engine
from ..registry import Registry
from ..settings import Settings


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


EngineDep = Annotated[Engine, Depends(get_engine)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# A route that carries this dependency needs the management key: OpenAPI shows it as protected, and the
# middleware enforces it before the body is read (app.security.ManagedRoutes collects these routes).
MANAGEMENT_KEY = HTTPBearer(auto_error=False, description="SEQ2SEQ_API_KEY, or the file api-key in the data directory")
Managed = Depends(MANAGEMENT_KEY)
