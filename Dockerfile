# The unimeter processes (FEP, pipeline, sink, scheduler, API) in one image; see docker-compose.yml.
FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY decoders decoders
COPY vee vee
COPY billing billing
COPY ingest ingest
COPY pipeline pipeline
COPY sinks sinks
COPY aggregates aggregates
COPY devices devices
COPY api api
COPY simulator simulator
COPY unimeter unimeter
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT []
CMD ["unimeter", "--help"]
