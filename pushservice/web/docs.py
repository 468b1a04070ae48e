"""``GET /docs``: the API's documentation page, Swagger UI reading ``/openapi.json``.

Swagger UI's files come from the flask-swagger-ui package and are served from here (no
CDN), so the page works wherever the service runs, offline included. Anyone may read it:
it shows only what ``/openapi.json`` shows.
"""

from __future__ import annotations

from html import escape
from importlib.resources import files

import orjson
from flask import Blueprint, Response, send_from_directory, url_for

bp = Blueprint("docs", __name__, url_prefix="/docs")

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>pushservice API</title>
  <link rel="stylesheet" href="{css}">
  <link rel="icon" type="image/png" href="{icon}">
  <style>body {{ margin: 0; }} .swagger-ui .topbar {{ display: none; }}</style>
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{bundle}"></script>
  <script>
    window.ui = SwaggerUIBundle({config});
  </script>
</body>
</html>
"""


def _dist_folder() -> str:
    return str(files("flask_swagger_ui") / "dist")


@bp.get("")
def page():
    """The documentation page: every endpoint, its parameters, answers and errors, with
    "Try it out" against this instance (paste a token under "Authorize")."""
    config = {"url": url_for("openapi.openapi_document"), "dom_id": "#swagger-ui",
              "deepLinking": True, "persistAuthorization": True,
              "displayRequestDuration": True, "defaultModelsExpandDepth": 0,
              "docExpansion": "list", "tryItOutEnabled": False}
    html = _PAGE.format(
        css=escape(url_for("docs.asset", asset="swagger-ui.css")),
        icon=escape(url_for("docs.asset", asset="favicon-32x32.png")),
        bundle=escape(url_for("docs.asset", asset="swagger-ui-bundle.js")),
        # orjson escapes nothing that could end the script element: names and paths only.
        config=orjson.dumps(config).decode().replace("</", "<\\/"))
    response = Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/<asset>")
def asset(asset: str):
    """A file of Swagger UI (404 JSON for anything else); they change only with the
    package, so browsers revalidate them."""
    response = send_from_directory(_dist_folder(), asset, max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response
