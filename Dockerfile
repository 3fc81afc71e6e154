# botserver: serves a Rasa 3 project (mounted or copied at /bot) on port 5005.
# Build from the repository root:  docker build -t botserver .
# Untested in this repository's CI (no Docker there); kept correct by construction.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md cli.py ./
COPY server ./server
RUN pip install --no-cache-dir --prefix=/install ".[postgres,redis,rabbitmq,socketio]"

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /install /usr/local
RUN useradd --create-home --uid 1001 botserver \
    && mkdir /bot && chown botserver /bot
USER botserver
WORKDIR /bot
EXPOSE 5005
# Ready = a model is loaded and the tracker store answers.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:5005/health/ready', timeout=2).status != 200)"]
ENTRYPOINT ["botserver"]
CMD ["run", "-m", "models", "--enable-api", "--endpoints", "endpoints.yml"]
