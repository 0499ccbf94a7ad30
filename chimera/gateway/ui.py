"""S12 web UI (placeholder while it is being built)."""

from __future__ import annotations

from pathlib import Path

from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig

HERE = Path(__file__).parent


def template_config() -> TemplateConfig:
    return TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine)


def error_handler(api_handler):
    return api_handler


UI_ROUTES: list = []
