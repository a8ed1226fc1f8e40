#!/usr/bin/env bash
# Runs every Fuzz* target in the workspace for the given time (default 20s).
# Seed corpora live in each package's testdata/fuzz directory.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-20s}
grep -rl --include='*_test.go' '^func Fuzz' proto decap reassemble replay archive allinone 2>/dev/null |
while read -r f; do
  dir=$(dirname "$f")
  for fn in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //'); do
    echo "== $dir $fn"
    (cd "$dir" && go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$t" .)
  done
done
