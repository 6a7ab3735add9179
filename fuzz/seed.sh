#!/bin/sh
# Seeds the libFuzzer corpora (fuzz/corpus/parse, fuzz/corpus/replay) with every trace of the
# repository: tests/traces, tests/kernel, kernel, examples. The corpora are not committed (the
# fuzzer grows them); run this once before the first `cargo fuzz run`.
set -eu
cd "$(dirname "$0")"
for target in parse replay; do
    mkdir -p "corpus/$target"
    for dir in ../tests/traces ../tests/kernel ../kernel ../examples; do
        [ -d "$dir" ] || continue
        for f in "$dir"/*.trace; do
            [ -f "$f" ] && cp "$f" "corpus/$target/"
        done
    done
    echo "corpus/$target: $(ls "corpus/$target" | wc -l) files"
done
