# Tapline — see README.md. Every target works on a fresh machine with Go.
GO      ?= go
BIN     ?= bin
STAGES  := decap reassemble replay archive
PKGS    := work

.PHONY: all build test test-short soak bench run demo lint fuzz clean

all: build

## build: the four stage binaries and the all-in-one into ./bin (static, CGO off)
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ $(foreach s,$(STAGES),./$(s)/cmd/$(s)) ./allinone/cmd/tapline

## test: every module's tests (real JetStream, versitygw, kernel VXLAN lab as root),
## the 2-minute soak (TestSoak) included
test:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 80m $(PKGS)

## test-short: the tests that need neither root nor external tools
test-short:
	$(GO) test -short -count=1 $(PKGS)

## soak: the production-like soak of the kernel mirror lab for DURATION (default 30m; DURATION=2m is the short form)
DURATION ?= 30m
soak:
	TAPLINE_SOAK_DURATION=$(DURATION) $(GO) test -count=1 -v -run '^TestSoak$$' -timeout 0 ./allinone/e2e/

## bench: every benchmark and the whole-binary comparison script (docs/BENCHMARKS.md)
bench:
	scripts/bench.sh

## run: the whole pipeline on the local default (embedded JetStream, ./archive-data),
## replaying into the built-in test system on 127.0.0.1:8080, from bin/tapline
## (built when missing or older than the sources); ARGS="--http :9200 …" are
## passed through (`bin/tapline run --help` lists them)
ARGS ?=
run: $(BIN)/tapline
	$(BIN)/tapline run --testsystem 127.0.0.1:8080 $(ARGS)

$(BIN)/tapline: $(shell find . -name '*.go' -not -path './$(BIN)/*' 2>/dev/null) go.work
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./allinone/cmd/tapline

## demo: the whole flow on a bundled capture, within a minute
demo:
	$(GO) run ./allinone/cmd/tapline demo

## lint: formatting and vet
lint:
	@out=$$(gofmt -l $(STAGES) proto allinone); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## fuzz: run every fuzz target for FUZZTIME each (default 20s)
FUZZTIME ?= 20s
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf $(BIN)
