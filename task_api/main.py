"""The ASGI entry point for servers: `gunicorn task_api.main:app`, `uvicorn task_api.main:app`."""

from task_api.app import create_app

app = create_app()
