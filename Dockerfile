# syntax=docker/dockerfile:1

# Builder: every runtime requirement as a wheel; no compiler ever reaches the final image.
# The image always runs against a real Redis: fakeredis (make run's in-process stand-in) and
# lupa and sortedcontainers, which only it needs, are filtered out of requirements.txt.
FROM python:3.11-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /build
COPY requirements.txt requirements-dev.txt deploy/runtime_requirements.py ./
RUN python runtime_requirements.py requirements.txt > requirements-runtime.txt \
    && pip wheel --wheel-dir /wheels -r requirements-runtime.txt

# Runtime: gunicorn with uvicorn workers, as an unprivileged user.
FROM python:3.11-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    APP_ENV=production \
    PORT=8000
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app \
    && install -d -o 10001 -g 10001 /app
WORKDIR /app
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,from=builder,source=/build,target=/build \
    pip install --no-cache-dir --no-index --find-links=/wheels -r /build/requirements-runtime.txt \
    && pip check
COPY --chown=10001:10001 task_api ./task_api
COPY --chown=10001:10001 migrations ./migrations
COPY --chown=10001:10001 gunicorn.conf.py ./
USER 10001:10001
EXPOSE 8000 9000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/health', timeout=2)"]
ENTRYPOINT ["gunicorn", "-c", "gunicorn.conf.py"]
CMD ["task_api.main:app"]

# Tests: the runtime image plus the test tools and the suite (docker compose --profile test run --rm tests).
FROM runtime AS test
# The suite starts servers and the CLI itself, with its own settings: not production's.
ENV APP_ENV=development
HEALTHCHECK NONE
USER 0
# requirements-dev.txt includes the whole requirements.txt: fakeredis and its two come back here,
# for tests of the embedded default.
RUN --mount=type=bind,from=builder,source=/build,target=/build \
    pip install --no-cache-dir -r /build/requirements-dev.txt
COPY --chown=10001:10001 pyproject.toml ./
COPY --chown=10001:10001 tests ./tests
COPY --chown=10001:10001 README.md ./
COPY --chown=10001:10001 docs ./docs
USER 10001:10001
ENTRYPOINT []
CMD ["python", "-m", "pytest", "-p", "no:cacheprovider"]
