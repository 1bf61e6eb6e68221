"""The ASGI entry point for servers: `gunicorn task_api.main:app`, `uvicorn task_api.main:app`."""

from task_api.app import create_app
from task_api.config import load_settings

app = create_app(load_settings())
