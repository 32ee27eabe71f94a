# Image of a stream_app worker (used by docker-compose.yml and the Helm chart).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream_app ./stream_app
COPY topics ./topics
RUN pip install --no-cache-dir . && useradd --uid 1000 --create-home worker && mkdir /data && chown worker /data
USER worker
ENV STREAM_APP_DATA_DIR=/data STREAM_APP_WEB_HOST=0.0.0.0
EXPOSE 6066
# The counter example (a Behaviour on a Runtime); set STREAM_APP_PROCESSING_GUARANTEE to
# exactly_once for every message applied once across crashes (docker-compose.yml does).
CMD ["faust", "-A", "stream_app.examples.counter", "worker", "-l", "info"]
