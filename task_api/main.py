"""The ASGI entry point for gunicorn: `gunicorn -c gunicorn.conf.py task_api.main:app`.

A server started this way may listen anywhere, so it never signs with a weak key. Serve it
through gunicorn.conf.py (or `python -m task_api serve`): a bare `uvicorn task_api.main:app`
would parse headers without the bound of task_api/worker.py and trust uvicorn's default proxy.
"""

from task_api.app import create_app
from task_api.config import load_settings, refuse_weak_key

settings = load_settings()
refuse_weak_key(settings)
app = create_app(settings)
