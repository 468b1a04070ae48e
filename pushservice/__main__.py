"""``python -m pushservice``: run the service under gunicorn, with an embedded Redis
when none is configured and none answers on localhost:6379."""

from .launcher import main

raise SystemExit(main())
