# Image of the example shop's services (and of any kit service): `docker build -t kit .`,
# then `kit run module:service`, or the Faust worker of customer_stats; see
# docker-compose.yml and docs/shop.md.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY kit ./kit
# kit and Faust (the customer_stats worker): the `faust` extra of pyproject.toml
RUN pip install --no-cache-dir ".[faust]"
COPY schemas ./schemas
COPY services ./services
# services/ is not part of the installed package: import it from /app, whatever the
# working directory (the Faust worker runs in its data folder)
ENV PYTHONPATH=/app KIT_SCHEMAS_DIR=/app/schemas PYTHONUNBUFFERED=1
STOPSIGNAL SIGTERM
CMD ["kit", "--help"]
