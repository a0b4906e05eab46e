# DocuVault image: the api, relay and consumer (and the health probe that
# Docker Compose runs) as static binaries on a distroless base, without a
# shell, running as an unprivileged user. docker-compose.yml builds it; by
# hand: docker build -t docuvault:local .
# The compose file picks the binary: `api [init-db|migrate|init-bucket]`,
# `relay` or `consumer`.

# The go directive of go.mod (this image's Go must not be older).
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static (no cgo, so no libc needed at run time), without local paths.
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/ \
        ./cmd/api ./cmd/relay ./cmd/consumer ./deploy/healthcheck

# Distroless "static": CA certificates, time zones and /etc/passwd with the
# nonroot user (65532), nothing else. To pin it by digest, replace the tag
# with `@sha256:…` from `docker buildx imagetools inspect <image>`.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
ENV PATH=/usr/local/bin
USER 65532:65532
EXPOSE 8080
CMD ["api"]
