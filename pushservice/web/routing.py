"""Path segments that must not take the name of a fixed path beside them.

``GET /api/v1/messages/<message_id>`` would also match ``/api/v1/messages/send``: the
wrong method on a fixed path would then reach the variable one (a status lookup of a
message called "send"), and OPTIONS would offer that method there. A segment converted
by ``segment_except(...)`` never matches those words, so such a request is a 405 whose
``Allow`` lists exactly what the fixed path takes, as the OpenAPI document says.
"""

from __future__ import annotations

import re

from flask import Blueprint
from werkzeug.routing import BaseConverter


def segment_except(bp: Blueprint, name: str, *words: str) -> None:
    """Register, for ``bp``'s app, the converter ``name``: one path segment, any but
    ``words``. Call it before the blueprint's routes that use ``<name:...>``."""
    taken = "|".join(re.escape(word) for word in words)
    converter = type(f"{name.title().replace('_', '')}Converter", (BaseConverter,),
                     {"regex": rf"(?!(?:{taken})\Z)[^/]+"})

    @bp.record_once
    def add(state) -> None:
        # Rules are added after this runs, and the map reads converters as they are.
        state.app.url_map.converters.setdefault(name, converter)
