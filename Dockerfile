# Image for running kit services: `docker build -t kit .` then `kit run module:service`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY kit ./kit
RUN pip install --no-cache-dir .
COPY schemas ./schemas
COPY services ./services
ENV KIT_SCHEMAS_DIR=/app/schemas PYTHONUNBUFFERED=1
STOPSIGNAL SIGTERM
CMD ["kit", "--help"]
