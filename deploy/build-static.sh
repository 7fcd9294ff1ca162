#!/usr/bin/env bash
# Builds the server exactly as the Dockerfile does and checks that the result is a static binary.
#
# The `go build` command is not repeated here: it is read from the Dockerfile's RUN line and run with
# the same shell (sh -c, like Docker's shell form) and the same build arguments, only with the output
# path changed. So the flags cannot drift apart. Then:
#   - `go version -m` must show CGO_ENABLED=0 and -trimpath=true (Go does not record -ldflags when
#     -trimpath is on, so the ldflags are checked on the result instead:)
#   - the ELF must have no PT_INTERP and no PT_DYNAMIC program header (no dynamic loader, no libc)
#     and no .symtab or .debug_* section (-s -w), checked with a few lines of python3 (readelf and
#     file are not needed);
#   - the stamped version must be in the binary (-X main.version), and when it runs on this
#     machine, `server -version` must print it.
#
# Needs only Go and python3. Environment:
#   OUT=path        where to write the binary (default: a temporary directory, removed at exit)
#   VERSION=v1.2.3  version to stamp (default: git describe, else "dev")
#   TARGETARCH=...  default amd64, the architecture Cloud Run runs
set -euo pipefail
cd "$(dirname "$0")/.."

dockerfile=Dockerfile
# Join continuation lines, then take the one RUN instruction that runs `go build`.
mapfile -t runs < <(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$dockerfile" | grep -E '^[[:space:]]*RUN[[:space:]].*go build' || true)
if [ "${#runs[@]}" -ne 1 ]; then
	echo "build-static: expected exactly one RUN ... go build line in $dockerfile, found ${#runs[@]}" >&2
	exit 1
fi
cmd=$(printf '%s\n' "${runs[0]}" | sed -E 's/^[[:space:]]*RUN[[:space:]]+//')
case "$cmd" in
*"-o /out/server "*) ;;
*)
	echo "build-static: the go build line must write -o /out/server: $cmd" >&2
	exit 1
	;;
esac

tmp=
if [ -z "${OUT:-}" ]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	OUT=$tmp/server
fi
mkdir -p "$(dirname "$OUT")"
case "$OUT" in /*) ;; *) OUT=$PWD/$OUT ;; esac

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
export VERSION
export TARGETOS=linux
export TARGETARCH=${TARGETARCH:-amd64}

build=${cmd/-o \/out\/server /-o \"\$OUT\" }
echo "build-static: $cmd"
echo "build-static: (VERSION=$VERSION TARGETOS=$TARGETOS TARGETARCH=$TARGETARCH, output $OUT)"
OUT=$OUT sh -c "$build"

# 1. Build settings recorded in the binary.
info=$(go version -m "$OUT")
fail=0
want() {
	if ! grep -qF -- "$1" <<<"$info"; then
		echo "build-static: go version -m does not show: $1" >&2
		fail=1
	fi
}
want "build	CGO_ENABLED=0"
want "build	-trimpath=true"
want "build	GOOS=linux"
want "build	GOARCH=$TARGETARCH"
if [ "$fail" -ne 0 ]; then
	echo "$info" >&2
	exit 1
fi

# 2. Static and stripped ELF, version stamped.
python3 - "$OUT" "$VERSION" <<'PY'
import struct, sys
path, version = sys.argv[1], sys.argv[2]
with open(path, "rb") as f:
    data = f.read()
if data[:4] != b"\x7fELF":
    sys.exit(f"build-static: {path} is not an ELF file")
cls, enc = data[4], data[5]
if cls != 2:
    sys.exit("build-static: not a 64-bit ELF")
end = "<" if enc == 1 else ">"
# e_phoff at 0x20 (8 bytes), e_phentsize at 0x36, e_phnum at 0x38 (2 bytes each)
phoff = struct.unpack_from(end + "Q", data, 0x20)[0]
phentsize, phnum = struct.unpack_from(end + "HH", data, 0x36)
types = [struct.unpack_from(end + "I", data, phoff + i * phentsize)[0] for i in range(phnum)]
PT_DYNAMIC, PT_INTERP = 2, 3
bad = [name for t, name in ((PT_INTERP, "PT_INTERP"), (PT_DYNAMIC, "PT_DYNAMIC")) if t in types]
if bad:
    sys.exit(f"build-static: {path} is dynamically linked ({', '.join(bad)} present)")
# Section names: e_shoff at 0x28 (8 bytes), e_shentsize, e_shnum, e_shstrndx at 0x3a (2 bytes each);
# a section header has sh_name (4 bytes) first and sh_offset at +0x18 (8 bytes).
shoff = struct.unpack_from(end + "Q", data, 0x28)[0]
shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x3A)
stroff = struct.unpack_from(end + "Q", data, shoff + shstrndx * shentsize + 0x18)[0]
def name(i):
    n = struct.unpack_from(end + "I", data, shoff + i * shentsize)[0]
    return data[stroff + n : data.index(b"\0", stroff + n)].decode()
names = [name(i) for i in range(shnum)]
unstripped = [n for n in names if n == ".symtab" or n.startswith((".debug", ".zdebug"))]
if unstripped:
    sys.exit(f"build-static: {path} is not stripped (-s -w): has {', '.join(unstripped)}")
if version.encode() not in data:
    sys.exit(f"build-static: version {version!r} not found in {path} (-X main.version)")
print(f"build-static: static ELF ({phnum} program headers, no PT_INTERP/PT_DYNAMIC), stripped ({shnum} sections, no .symtab/.debug_*), version {version} stamped")
PY

# 3. It runs and reports the stamped version (only when built for this machine).
if [ "$(go env GOHOSTOS)/$(go env GOHOSTARCH)" = "linux/$TARGETARCH" ]; then
	got=$("$OUT" -version)
	if [ "$got" != "$VERSION" ]; then
		echo "build-static: server -version printed \"$got\", want \"$VERSION\"" >&2
		exit 1
	fi
fi

size=$(wc -c <"$OUT" | tr -d ' ')
echo "build-static: ok: $OUT, $size bytes ($((size / 1024 / 1024)) MiB), version $VERSION"
