# The README's two commands are `make run` and `make test`; the real work is in
# scripts/ so it can be run and read without make.

# Go lives in /usr/local/go/bin on our machines, which is not always on PATH.
# Appended, so a go already on PATH wins.
export PATH := $(PATH):/usr/local/go/bin

FUZZTIME ?= 10s
export FUZZTIME

.PHONY: all build run test fuzz bench services clean

all: build

build:
	go build -o bin/tollgate ./cmd/tollgate

# Redis and PostgreSQL (started if needed), the demo upstream on 127.0.0.1:9000 and Tollgate.
run:
	scripts/run.sh

# Redis and PostgreSQL (started if needed), go vet, go test -race ./...
test:
	scripts/test.sh

# Every Fuzz target for FUZZTIME each: make fuzz FUZZTIME=30s
fuzz:
	scripts/fuzz.sh

# The load benchmark (bench/README.md): Tollgate vs the upstream and nginx,
# results in bench/results/. Shorter: make bench BENCH_DURATION=3s
bench:
	scripts/bench.sh

# Redis and PostgreSQL only.
services:
	scripts/services.sh

clean:
	rm -rf bin
