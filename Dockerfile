# Lifeboat in a container: the three binaries on a slim Debian with the PostgreSQL client.
#   docker build -t lifeboat .
#   docker run --rm -e DATABASE_URL -v /etc/lifeboat:/etc/lifeboat:ro lifeboat
# The entrypoint is lifeboat-backup; run the others with --entrypoint lifeboat-verify (or
# lifeboat-restore). The configuration is read from /etc/lifeboat/lifeboat.toml.
# Its install steps are mirrored by scripts/install.sh, which CI runs: the runtime packages
# are deploy/runtime-packages.txt for both.

FROM rust:1-trixie AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lifeboat-backup -p lifeboat-verify -p lifeboat-restore \
 && mkdir /out \
 && cp target/release/lifeboat-backup target/release/lifeboat-verify target/release/lifeboat-restore /out/

# Debian 13: pg_dump 17, which dumps PostgreSQL servers up to 17 (set pg-bin-dir for newer).
FROM debian:trixie-slim
COPY deploy/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
 && grep -v '^#' /tmp/runtime-packages.txt | sed '/^$/d' \
    | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt
COPY --from=build /out/ /usr/local/bin/
# The sample configuration as a default (Railway builds from your copy of the repository);
# mount your own over it elsewhere (Kubernetes: the ConfigMap in deploy/kubernetes/).
COPY deploy/lifeboat.toml /etc/lifeboat/lifeboat.toml
# A numeric user, so Kubernetes' runAsNonRoot can check it.
RUN useradd --system --uid 10001 --home-dir /var/lib/lifeboat --create-home lifeboat
ENV LIFEBOAT_CONFIG=/etc/lifeboat/lifeboat.toml
USER 10001
ENTRYPOINT ["lifeboat-backup"]
