# Astra gateway image: `astra serve` on the built-in simulator (SIM, SIM2, SIM3), listening on
# all interfaces, API on 8080, /health and /metrics on 9090, state (API keys, order journal,
# the history record) in the volume /data.
#
#   docker build -t astra .
#   docker run -d -p 8080:8080 -p 9090:9090 --env ASTRA_API_KEY=$ASTRA_API_KEY --name astra-gateway astra
#
# Invariants: the runtime stage holds no compiler, no pip and no source tree, only the
# virtualenv built in the builder stage (with the compiled book cores: the builder has gcc and
# zlib's headers, and its import line fails the build if one of them did not compile) (both stages share BASE, so the venv's interpreter
# link stays valid); it runs as the unprivileged user `astra` (uid 10001), which owns /data.
# BASE defaults to the official python:3.11-slim; any Debian-like image with `python` 3.11+
# and its venv module works (scripts/docker-check.sh builds one with debootstrap).
# PIP_INDEX_URL / PIP_EXTRA_INDEX_URL (build args) point pip at a mirror; unset, PyPI.
ARG BASE=python:3.11-slim

FROM ${BASE} AS builder
# Marks this stage's image, which scripts/docker-check.sh removes after its builds.
LABEL io.astra.stage=builder
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# A C compiler and zlib's headers for the book cores (setup.py); Python's own headers where the
# base image lacks them (the official image has them, a debootstrap one does not).
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends gcc libc6-dev zlib1g-dev \
 && { python -c "import sysconfig, os, sys; sys.exit(not os.path.exists(sysconfig.get_paths()['include'] + '/Python.h'))" \
      || apt-get install -y -q --no-install-recommends python3-dev; } \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/astra
WORKDIR /src
# Dependencies first, from pyproject.toml alone: a source change does not re-download them.
COPY pyproject.toml setup.py README.md ./
RUN mkdir -p src/astra && touch src/astra/__init__.py \
 && /opt/astra/bin/pip install ".[postgres]" \
 && /opt/astra/bin/pip uninstall -y astra
COPY src ./src
# Not editable: the package is copied into the venv, the source tree stays in this stage.
# Then what nothing imports at run time: pip, headers, bundled test suites, Cython sources,
# Arrow Flight (RPC: nothing in astra uses it). The import line fails the build if a trim
# went too far, or if a book core was not compiled.
RUN /opt/astra/bin/pip install --no-deps ".[postgres]" \
 && /opt/astra/bin/pip uninstall -y pip \
 && cd /opt/astra/lib/python3*/site-packages \
 && rm -rf pyarrow/include pyarrow/src pyarrow/tests ccxt/test \
      pyarrow/libarrow_flight.so* pyarrow/_flight.* pyarrow/flight.py \
 && find . \( -name '*.pyi' -o -name '*.pxd' -o -name '*.pyx' \) -delete \
 && /opt/astra/bin/python -c "import astra.cli, astra.history.query, astra.history.export, astra.tape.files, \
      pyarrow.parquet, pyarrow.dataset, pyarrow.csv, psycopg, ccxt.async_support, ccxt.pro, \
      astra.venues._levels, astra.venues.okx._okxbook, astra.venues.kraken._krakenbook, \
      astra.venues.htx._htxbook"

FROM ${BASE}
RUN groupadd --system --gid 10001 astra \
 && useradd --system --uid 10001 --gid astra --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin astra \
 && mkdir -p /data && chown astra:astra /data && chmod 0700 /data
COPY --from=builder /opt/astra /opt/astra
ENV PATH=/opt/astra/bin:$PATH \
    ASTRA_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
# API keys (hashed), the order journal and the history record survive the container.
VOLUME /data
WORKDIR /data
USER astra
EXPOSE 8080 9090
# No curl in the image: the venv's python asks /health (the metrics port, no key needed).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:9090/health', timeout=4).status != 200)"]
# `docker run IMAGE` serves; `docker run IMAGE keys create` (or sim, credentials ...) runs
# any other astra command against the same /data.
ENTRYPOINT ["astra"]
CMD ["serve", "--host", "0.0.0.0"]
