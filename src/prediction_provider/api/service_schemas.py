"""Bodies of ``GET /`` and ``/api/v1/plugins``: what the server is, and what it is built from.

The field names are those the seed project's clients read (``message``,
``version``, ``docs``; ``feeder_plugins`` ... ``core_plugins``; ``plugins``,
``total_plugins``, ``system_status``); the rest are ours and only added.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ServiceLinks(BaseModel):
    openapi: str
    redoc: str
    health: str
    ready: str
    models: str
    plugins: str
    metrics: str
    open_inference: str


class ServiceInfo(BaseModel):
    name: str
    message: str = Field(description="The server's name, where the seed project's clients read it.")
    version: str
    docs: str = Field(description="Swagger UI, served by the server itself.")
    health: str
    links: ServiceLinks


class PluginCatalogPublic(BaseModel):
    feeder_plugins: list[str] = Field(description="`prediction_provider.feeders` entry points (PP_FEEDER).")
    predictor_plugins: list[str] = Field(
        description="`prediction_provider.predictors` entry points: signal predictors (PP_SIGNAL_PREDICTOR)."
    )
    pipeline_plugins: list[str] = Field(description="`prediction_provider.pipelines` entry points.")
    endpoint_plugins: list[str] = Field(description="The protocols served; built in, not pluggable.")
    core_plugins: list[str] = Field(description="The job executors PP_JOB_BACKEND chooses; built in.")
    loader_plugins: list[str] = Field(
        description="`prediction_provider.loaders` entry points: model formats."
    )


class PluginErrorPublic(BaseModel):
    code: str
    message: str | None = Field(
        description="Why it does not load: for operators and admins only (it may name files); else null."
    )


class PluginStatePublic(BaseModel):
    name: str
    status: Literal["active", "unavailable"]
    version: str = Field(description="Of the distribution that registers the plugin.")
    error: PluginErrorPublic | None


class PluginKinds(BaseModel):
    core: PluginStatePublic = Field(description="The job executor this process runs (PP_JOB_BACKEND).")
    feeder: PluginStatePublic = Field(description="PP_FEEDER's feeder, built from the settings.")
    predictor: PluginStatePublic = Field(
        description="The signal predictor of /api/v1/predict/entry and /exit."
    )
    pipeline: PluginStatePublic = Field(description="The point-in-time feature pipeline.")


class PluginStatusPublic(BaseModel):
    plugins: PluginKinds
    total_plugins: int
    system_status: Literal["operational", "degraded"] = Field(
        description="operational: every configured plugin loads; degraded: one or more do not."
    )
