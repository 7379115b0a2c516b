# syntax=docker/dockerfile:1.7
# One multi-stage build for every image of Contoso Orders:
#
#   docker build --target accept-svc  -t contoso/accept-svc:0.1.0  .
#   docker build --target process-svc -t contoso/process-svc:0.1.0 .
#   docker build --target notify-svc  -t contoso/notify-svc:0.1.0  .
#   docker build --target gateway     -t contoso/gateway:0.1.0     .   (the SPA included)
#   docker build --target contoso     -t contoso/contoso:0.1.0     .   (migrate, keys, dlq, bench)
#
# Dependencies are compiled in their own layer (cargo-chef), so a change to the code alone rebuilds
# only the workspace crates. Runtime images are distroless (glibc, CA certificates, no shell), run
# as a non-root user, and work with a read-only root filesystem: nothing is written at run time.

ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG NODE_IMAGE=node:20.19-bookworm-slim
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked \
      --bin accept-svc --bin process-svc --bin notify-svc --bin gateway --bin contoso

# The SPA: built once, copied into the gateway image.
FROM ${NODE_IMAGE} AS web
WORKDIR /src/gateway/web
COPY gateway/web/package.json gateway/web/package-lock.json ./
RUN npm ci --no-fund --no-audit
COPY proto /src/proto
COPY gateway/web ./
RUN npm run build

FROM ${RUNTIME_IMAGE} AS runtime
USER nonroot:nonroot
ENV RUST_LOG=info LOG_FORMAT=json

FROM runtime AS accept-svc
COPY --from=builder /src/target/release/accept-svc /usr/local/bin/accept-svc
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["/usr/local/bin/accept-svc", "--probe"]
ENTRYPOINT ["/usr/local/bin/accept-svc"]

FROM runtime AS process-svc
COPY --from=builder /src/target/release/process-svc /usr/local/bin/process-svc
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["/usr/local/bin/process-svc", "--probe"]
ENTRYPOINT ["/usr/local/bin/process-svc"]

FROM runtime AS notify-svc
COPY --from=builder /src/target/release/notify-svc /usr/local/bin/notify-svc
EXPOSE 50052
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["/usr/local/bin/notify-svc", "--probe"]
ENTRYPOINT ["/usr/local/bin/notify-svc"]

FROM runtime AS gateway
COPY --from=builder /src/target/release/gateway /usr/local/bin/gateway
COPY --from=web /src/gateway/web/dist /srv/web
ENV WEB_DIR=/srv/web
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["/usr/local/bin/gateway", "--probe"]
ENTRYPOINT ["/usr/local/bin/gateway"]

FROM runtime AS contoso
COPY --from=builder /src/target/release/contoso /usr/local/bin/contoso
ENTRYPOINT ["/usr/local/bin/contoso"]
