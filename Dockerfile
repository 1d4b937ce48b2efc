# The pgrepl-proxy image. Both images are build arguments: BASE_IMAGE is what the proxy runs on,
# BUILDER_IMAGE what compiles it. On a machine without registry access, build the binary first
# (`cargo build --release --locked -p pgrepl-proxy`) and pass any local Debian bookworm image as
# both (e.g. pgrepl/postgres:local): the builder stage then takes target/release/pgrepl-proxy
# from the context instead of compiling. That binary is taken as it is, so rebuild it after
# changing the sources, and build it on a system no newer than BASE_IMAGE (glibc).
ARG BUILDER_IMAGE=rust:1-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY . .
RUN if [ -x target/release/pgrepl-proxy ]; then \
        cp target/release/pgrepl-proxy /pgrepl-proxy; \
    else \
        cargo build --release --locked -p pgrepl-proxy && cp target/release/pgrepl-proxy /pgrepl-proxy; \
    fi

FROM ${BASE_IMAGE}
COPY --from=build /pgrepl-proxy /usr/local/bin/pgrepl-proxy
# Fails the build, rather than the container, when the binary cannot run on this base.
RUN ["/usr/local/bin/pgrepl-proxy", "--version"]
# 6432: PostgreSQL clients; 9187: Prometheus /metrics.
EXPOSE 6432 9187
# SIGTERM starts the proxy's graceful shutdown; set explicitly so that a PostgreSQL base image
# (official STOPSIGNAL SIGINT) does not pass its own on.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pgrepl-proxy"]
CMD ["serve"]
