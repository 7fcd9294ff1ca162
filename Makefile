# One entry point for checks; .ci/run calls `make ci`.
GO ?= go
LINT = $(GO) tool -modfile=tools/go.mod golangci-lint

.PHONY: test ci fmt-check vet lint gotest pytest build-static demo bench

test: fmt-check vet lint gotest pytest

ci: test build-static

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

lint:
	$(LINT) run ./...

gotest:
	$(GO) test -race -shuffle=on -count=1 -timeout 12m ./...

pytest:
	bash xsoar-content/run_tests.sh

# Build exactly as the Dockerfile does and check the binary is static.
build-static:
	bash deploy/build-static.sh

demo:
	$(GO) run ./cmd/server -demo

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
