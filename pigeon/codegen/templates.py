"""The jinja2 templates under ``pigeon/kernels/`` and the one way they are rendered."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

from pigeon.ir.graph_ir import Node

TEMPLATES = Path(__file__).resolve().parent.parent / "kernels"


class CodegenError(ValueError):
    """A kernel a code generator cannot express, with the op and the layer line."""

    backend = "kernel"

    def __init__(self, message: str, node: Node | None = None):
        where = f" ({node.loc})" if node is not None and node.loc else ""
        op = f"{node.op.value}: " if node is not None else ""
        super().__init__(f"{self.backend} codegen: {op}{message}{where}")


class TemplateError(ValueError):
    """A template failed to render: names the template, its line and the error."""


@lru_cache(maxsize=None)
def template_env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render(template: str, **context) -> str:
    """Render a template file (undefined names are errors), naming the template and
    line on failure."""
    try:
        return template_env().get_template(template).render(**context)
    except jinja2.TemplateError as err:
        raise TemplateError(f"template {template} line {_template_line(err, template)}: {err}") from None


def _template_line(err: jinja2.TemplateError, template: str) -> int | str:
    """The template line an error happened on: syntax errors carry it; for errors while
    rendering, jinja2 rewrites the traceback to point at template lines."""
    line = getattr(err, "lineno", None)
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(template):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line if line is not None else "?"
