#!/usr/bin/env bash
# Builds Litestream (README "Surviving the loss of the machine") from the Go module proxy into a
# directory of the build tree, once, and prints the binary's absolute path on stdout (everything
# else goes to stderr). The Litestream test (tests/integration/litestream_test.cpp) runs it to
# find the binary, and so does pasyn-bench-litestream's user (--litestream "$(scripts/...)").
# scripts/test.sh runs it first, so that the build (about a minute, the first time) is not part
# of a test's time.
#   scripts/litestream.sh [DIR]    DIR: where the binary goes (default: build/litestream-bin)
# Needs Go (`go` on PATH, else /usr/local/go/bin/go; $GO overrides), a C compiler (Litestream's
# SQLite driver is cgo) and the network (or a filled module cache) the first time. Fails if it
# cannot build: a missing Litestream must fail the test that needs it, never skip it.
set -euo pipefail
cd "$(dirname "$0")/.."
version=v0.3.14
dir=$(realpath -m "${1:-build/litestream-bin}")
bin=$dir/litestream
stamp=$dir/litestream.version  # the version the binary in $dir was built from
if [[ -x $bin && -f $stamp && $(<"$stamp") == "$version" ]]; then
  echo "$bin"
  exit 0
fi
go=${GO:-$(command -v go || true)}
if [[ -z $go && -x /usr/local/go/bin/go ]]; then go=/usr/local/go/bin/go; fi
if [[ -z $go ]]; then
  echo "litestream.sh: Go is not installed (no go on PATH, no /usr/local/go/bin/go; set GO)" >&2
  exit 1
fi
mkdir -p "$dir"
echo "litestream.sh: building Litestream $version with $("$go" version)" >&2
rm -f "$stamp"
GOBIN=$dir CGO_ENABLED=1 "$go" install \
  "github.com/benbjohnson/litestream/cmd/litestream@$version" >&2
[[ -x $bin ]] || { echo "litestream.sh: go install left no $bin" >&2; exit 1; }
echo "$version" >"$stamp"
echo "$bin"
