# framefusion — the two commands of the README's quick start, and their helpers.
#   make demo   set up, build (release) and run the reference curation job on the sample corpus
#   make test   set up, then fmt + clippy + the whole test suite
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

export FRAMEFUSION_HOME ?= $(HOME)/.cache/framefusion

.PHONY: setup demo test build bench

setup:
	@bash scripts/setup.sh

demo: setup
	cargo build --release -p framefusion-cli
	@bash scripts/demo.sh

test: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	bash scripts/check-layout.sh
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace
	cargo build -p framefusion-cli
	cargo test --workspace

build: setup
	cargo build --workspace

bench: setup
	cargo bench -p framefusion-benches
