# One image for both the proxy and the demo upstream; docker-compose.yml picks
# the subcommand.
FROM golang:1.26 AS build
WORKDIR /src
# Modules first so code changes don't invalidate the download layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
    -o /out/tollgate ./cmd/tollgate

# Alpine rather than distroless so compose healthchecks can use wget.
FROM alpine:3.21
RUN apk add --no-cache ca-certificates \
    && adduser -D -H -u 10001 tollgate
COPY --from=build /out/tollgate /usr/local/bin/tollgate
USER tollgate
EXPOSE 8080 8081 9000
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve", "--config", "/etc/tollgate/tollgate.yaml"]
