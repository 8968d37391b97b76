# A stand-in for the official postgres image, for scripts/docker-check.sh only (no registry is
# reachable where it runs): Debian's PostgreSQL 15 on the local base image, honouring the
# same POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB and data directory.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && pg_dropcluster 15 main \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["postgres-entrypoint"]
