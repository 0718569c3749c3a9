#!/usr/bin/env bash
# Lint: clang-format (the style in .clang-format) over every tracked C/C++/CUDA source, and
# clang-tidy (the checks in .clang-tidy) over the project's own C++ sources in core/, shim/,
# hooks/, tools/ and bench/, each compiled as build/ compiles it (build/compile_commands.json;
# build/ is configured first if it has none). tests/ is only format-checked by default (its
# clang-tidy run would double the time; name test sources to check them). CUDA sources (.cu) are
# only format-checked. Every clang-tidy warning or error located in a file of this repository
# fails the run and is printed once (a header's warning comes from every source that includes
# it); diagnostics inside other headers (CUDA, system) do not count. Plain clang-format and
# clang-tidy runs: nothing is cached. Ends with one summary line; exits non-zero on any finding.
#
#   scripts/lint.sh [--format-only|--tidy-only] [FILES...]
# FILES limits both steps to those files: clang-format checks the C/C++/CUDA ones, clang-tidy the
# .cpp ones build/ compiles, tests/ included (a header is checked through the given sources that
# include it). LINT_JOBS (default: nproc) sets the clang-tidy parallelism; CLANG_FORMAT and
# CLANG_TIDY name the binaries (default: clang-format, clang-tidy). Fix formatting with
# `clang-format -i FILES`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck disable=SC2016  # the sed expression is meant literally
root_re=$(printf '%s' "$root" | sed 's/[][\.*^$(){}+?|]/\\&/g')  # $root as a regex
do_format=1
do_tidy=1
files=()
for arg in "$@"; do
  case "$arg" in
    --format-only) do_tidy=0 ;;
    --tidy-only) do_format=0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*)
      echo "lint.sh: unknown option '$arg' (use --format-only, --tidy-only or file names)" >&2
      exit 2
      ;;
    *)
      [ -f "$arg" ] || { echo "lint.sh: no such file: $arg" >&2; exit 2; }
      files+=("$(realpath --relative-to="$root" "$arg")")
      ;;
  esac
done
if [ "$do_format" -eq 0 ] && [ "$do_tidy" -eq 0 ]; then
  echo "lint.sh: --format-only and --tidy-only exclude each other" >&2
  exit 2
fi
clang_format="${CLANG_FORMAT:-clang-format}"
clang_tidy="${CLANG_TIDY:-clang-tidy}"
jobs="${LINT_JOBS:-$(nproc)}"
tools=()
[ "$do_format" -eq 0 ] || tools+=("$clang_format")
[ "$do_tidy" -eq 0 ] || tools+=("$clang_tidy")
for tool in "${tools[@]}"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "lint.sh: $tool not found (scripts/install-deps.sh installs it)" >&2
    exit 2
  fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
rc=0

# The C/C++/CUDA sources to format-check: the tracked ones, or those of FILES.
sources() {
  if [ ${#files[@]} -gt 0 ]; then
    printf '%s\n' "${files[@]}" | grep -E '\.(c|cpp|h|cu|cuh)$' || true
  else
    git ls-files -- '*.c' '*.cpp' '*.h' '*.cu' '*.cuh'
  fi
}

format_bad=0
if [ "$do_format" -eq 1 ]; then
  sources >"$tmp/format-files"
  if [ -s "$tmp/format-files" ]; then
    # One process per 50 files; -Werror makes every violation an error line naming file:line.
    xargs -d '\n' -n 50 "$clang_format" --dry-run -Werror <"$tmp/format-files" \
      >"$tmp/format.log" 2>&1 || true
  fi
  touch "$tmp/format.log"
  grep -E '^[^ :]+:[0-9]+:[0-9]+: (error|warning): ' "$tmp/format.log" >"$tmp/format-hits" || true
  if [ -s "$tmp/format-hits" ]; then
    sed -E 's/: (error|warning): .*$/: not formatted (clang-format)/' "$tmp/format-hits"
    format_bad=$(cut -d: -f1 "$tmp/format-hits" | sort -u | wc -l)
    echo "lint: fix with: clang-format -i $(cut -d: -f1 "$tmp/format-hits" | sort -u | xargs)"
    rc=1
  elif grep -q . "$tmp/format.log"; then
    cat "$tmp/format.log"  # clang-format itself failed (e.g. a bad .clang-format)
    echo "lint: clang-format failed"
    rc=1
  fi
fi

tidy_warnings=0
tidy_files=0
if [ "$do_tidy" -eq 1 ]; then
  if [ ! -f build/compile_commands.json ]; then
    echo "lint: configuring build/ for its compile_commands.json"
    cmake -S . -B build >"$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log" >&2; exit 1; }
  fi
  # The project's .cpp files build/ compiles (a file compiled for two targets is checked for both
  # by clang-tidy itself): FILES when given (tests/ too), else those of core, shim, hooks, tools
  # and bench.
  python3 - "$root" build/compile_commands.json "${files[@]}" >"$tmp/tidy-files" <<'EOF'
import json, os, re, sys
root, db, wanted = sys.argv[1], sys.argv[2], {os.path.join(sys.argv[1], f) for f in sys.argv[3:]}
dirs = "core|shim|hooks|tools|tests|bench" if wanted else "core|shim|hooks|tools|bench"
own = re.compile(re.escape(root) + "/(" + dirs + r")/.*\.cpp$")
found = set()
for entry in json.load(open(db)):
    path = os.path.normpath(os.path.join(entry["directory"], entry["file"]))
    if own.match(path) and (not wanted or path in wanted):
        found.add(path)
print("\n".join(sorted(found)))
EOF
  sed -i '/^$/d' "$tmp/tidy-files"
  # Header diagnostics only for this repository's own folders (not CUDA's or the system's).
  header_filter="^$root_re/(core|shim|hooks|tools|tests|bench)/"
  mkdir -p "$tmp/tidy"
  if [ -s "$tmp/tidy-files" ]; then
    # One clang-tidy per source; its output, and a .failed mark when it exits non-zero (a compiler
    # error: the file was not fully checked), go to files named after the source.
    export clang_tidy header_filter tmp
    # shellcheck disable=SC2016
    xargs -d '\n' -P "$jobs" -I{} sh -c '
      out="$tmp/tidy/$(printf %s "$1" | tr / _)"
      "$clang_tidy" -p build --quiet --header-filter="$header_filter" "$1" >"$out.log" 2>&1 ||
        echo "$1" >"$out.failed"' sh {} <"$tmp/tidy-files"
  fi
  # Findings located in this repository's files, each once.
  cat "$tmp"/tidy/*.log 2>/dev/null |
    grep -E "^$root_re/[^:]+:[0-9]+:[0-9]+: (warning|error): " |
    grep -vE "^$root_re/(build[^/]*|\.gpu-payload)/" | sed "s|^$root/||" | sort -u \
    >"$tmp/tidy-hits" || true
  if [ -s "$tmp/tidy-hits" ]; then
    cat "$tmp/tidy-hits"
    tidy_warnings=$(wc -l <"$tmp/tidy-hits")
    tidy_files=$(cut -d: -f1 "$tmp/tidy-hits" | sort -u | wc -l)
    rc=1
  fi
  # A source clang-tidy could not compile was not fully checked: show why, even if the errors are
  # in headers outside the repository.
  for failed in "$tmp"/tidy/*.failed; do
    [ -e "$failed" ] || continue
    src=$(cat "$failed")
    echo "lint: clang-tidy could not compile ${src#"$root"/}:"
    log="${failed%.failed}.log"
    grep -E ': (error|fatal error): ' "$log" | head -10 || tail -20 "$log"
    rc=1
  done
fi

format_summary="clang-format $format_bad of $(wc -l <"$tmp/format-files" 2>/dev/null || echo 0) files unformatted"
[ "$do_format" -eq 1 ] || format_summary="clang-format skipped"
tidy_summary="clang-tidy $tidy_warnings warnings in $tidy_files files ($(wc -l <"$tmp/tidy-files" 2>/dev/null || echo 0) sources checked)"
[ "$do_tidy" -eq 1 ] || tidy_summary="clang-tidy skipped"
echo "lint: $format_summary, $tidy_summary ($(($(date +%s) - start)) s)"
exit "$rc"
