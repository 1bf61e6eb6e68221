"""The ASGI entry point for servers: `gunicorn task_api.main:app`, `uvicorn task_api.main:app`.

A server started this way may listen anywhere, so it never signs with a weak key.
"""

from task_api.app import create_app
from task_api.config import load_settings, refuse_weak_key

settings = load_settings()
refuse_weak_key(settings)
app = create_app(settings)
