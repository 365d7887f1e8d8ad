#!/usr/bin/env bash
# Build the parallel-dqn container image with NO network inside the build (air-gapped sites, and this CI, which
# has no image registry).
#
#   bash launchers/container/build.sh                      # CPU torch, FROM the local Debian base (made if missing)
#   bash launchers/container/build.sh --base python:3.11-slim-bookworm   # any base with python3.11 + venv
#   bash launchers/container/build.sh --torch torch==2.13.0+cu128 \
#        --torch-index https://download.pytorch.org/whl/cu128            # a CUDA torch (documented, not built in CI)
#
# Options (environment variables in brackets):
#   --tag TAG            image name [PARALLEL_DQN_IMAGE, default parallel-dqn:latest]
#   --base IMAGE         the FROM image; it needs python3 (3.11+) with the venv module [PARALLEL_DQN_BASE,
#                        default local/parallel-dqn-base:bookworm, built here by mmdebstrap + docker import]
#   --torch SPEC         the torch requirement put into the wheelhouse and installed [default torch==2.13.0,
#                        requirements.lock's pin: the CPU build]
#   --torch-index URL    an extra index for --torch (a CUDA wheel index)
#   --uid N              uid of the image's non-root user `pdqn` [default 1000]
#   --mirror URL         Debian mirror for the base [PARALLEL_DQN_DEBIAN_MIRROR, default: this machine's apt source]
#
# Steps: (1) the base image, only when it is the default one and missing; (2) the wheelhouse in
# launchers/container/context/ (ignored by git): every runtime dependency of parallel-dqn at requirements.lock's
# versions (`pip download`, from the pip cache / registry on this host; reused while requirements.lock, setup.cfg
# and --torch are unchanged) and the project's own wheel (`pip wheel`, rebuilt every time: cheap); (3) `docker
# build --network none` with the legacy builder (Debian's docker has no buildx) from that context.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

tag="${PARALLEL_DQN_IMAGE:-parallel-dqn:latest}"
default_base="local/parallel-dqn-base:bookworm"
base="${PARALLEL_DQN_BASE:-$default_base}"
torch="torch==2.13.0"
torch_index=""
uid=1000
mirror="${PARALLEL_DQN_DEBIAN_MIRROR:-}"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --tag) tag="$2"; shift 2 ;;
        --base) base="$2"; shift 2 ;;
        --torch) torch="$2"; shift 2 ;;
        --torch-index) torch_index="$2"; shift 2 ;;
        --uid) uid="$2"; shift 2 ;;
        --mirror) mirror="$2"; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0" | cut -c3-; exit 0 ;;
        *) echo "build.sh: error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { echo "[container/build] $*" >&2; }
die() { echo "[container/build] error: $*" >&2; exit 2; }

# Debian's client (/usr/bin/docker) with the legacy builder: a newer client first on PATH wants buildx for
# DOCKER_BUILDKIT=1, which Debian 12 does not package.
docker_bin="${DOCKER:-$(command -v /usr/bin/docker || command -v docker || true)}"
[ -n "$docker_bin" ] || die "docker not found (apt-get install docker.io)"
export DOCKER_BUILDKIT=0
"$docker_bin" info >/dev/null 2>&1 || die "the docker daemon does not answer (start it: dockerd &)"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"

# ---- (1) the base: Debian bookworm (Python 3.11) made locally, no registry -----------------------------------------
debian_mirror() { # the first Debian (not -security) URI of this machine's apt sources
    local uri
    uri="$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 \
        | sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' | awk '{print $1}')"
    echo "${uri:-http://deb.debian.org/debian}"
}
if ! "$docker_bin" image inspect "$base" >/dev/null 2>&1; then
    [ "$base" = "$default_base" ] || die "base image $base not found (docker pull/load it, or omit --base)"
    command -v mmdebstrap >/dev/null || die "mmdebstrap not found (apt-get install mmdebstrap)"
    mirror="${mirror:-$(debian_mirror)}"
    log "building the base $base with mmdebstrap from $mirror (~1-2 min)"
    start=$SECONDS
    # minbase + python3 (3.11 in bookworm) with venv; no docs, man pages or locales (cheap size savings)
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        bookworm - "$mirror" | "$docker_bin" import --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
    log "base $base built in $((SECONDS - start)) s"
fi

# ---- (2) the wheelhouse beside the Dockerfile ----------------------------------------------------------------------
context="$here/context"
deps="$context/wheels/deps"
project="$context/wheels/project"
stamp="$context/deps.stamp"  # outside the folder the image copies: its cache stays valid
want="$(cat "$root/requirements.lock" "$root/setup.cfg" <(echo "$torch $torch_index") | sha256sum | cut -c1-16)"
mkdir -p "$context" "$project"
rm -f "$project"/*.whl
log "building the project's wheel"
"$python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$project" "$root" >/dev/null
wheel="$(ls "$project"/parallel_dqn-*.whl)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "downloading the runtime dependencies at requirements.lock's versions into $deps"
    start=$SECONDS
    rm -rf "$deps"; mkdir -p "$deps"
    # requirements.lock pins everything (test tools too); only what the project's wheel needs is downloaded.
    # torch is the one pin --torch may replace (a CUDA build has the same version plus a local label).
    grep -vE '^torch==' "$root/requirements.lock" >"$context/constraints.txt"
    extra=()
    [ -z "$torch_index" ] || extra=(--extra-index-url "$torch_index")
    "$python" -m pip download --quiet --only-binary=:all: --dest "$deps" -c "$context/constraints.txt" \
        ${extra[@]+"${extra[@]}"} "$wheel" "$torch" >"$context/pip.log" 2>&1 \
        || { tail -n 20 "$context/pip.log" >&2; die "pip download failed (log: $context/pip.log)"; }
    # what the image installs: every downloaded wheel by name (torch through the TORCH build argument)
    "$python" - "$deps" <<'PY'
import pathlib, sys
deps = pathlib.Path(sys.argv[1])
names = sorted({w.name.split("-")[0].lower().replace("_", "-") for w in deps.glob("*.whl")} - {"torch", "parallel-dqn"})
(deps / "requirements.txt").write_text("".join(f"{n}\n" for n in names))
PY
    rm -f "$deps"/parallel_dqn-*.whl
    echo "$want" >"$stamp"
    log "wheelhouse ready in $((SECONDS - start)) s ($(du -sh "$deps" | cut -f1))"
fi
cp "$root/launchers/quickstart.sh" "$context/quickstart.sh"

# ---- (3) the image, no network inside the build --------------------------------------------------------------------
log "docker build --network none -t $tag (FROM $base, $torch)"
start=$SECONDS
"$docker_bin" build --network none --quiet -f "$here/Dockerfile" -t "$tag" \
    --build-arg BASE="$base" --build-arg TORCH="$torch" --build-arg UID="$uid" "$context" >/dev/null
log "image $tag built in $((SECONDS - start)) s ($("$docker_bin" image inspect -f '{{.Size}}' "$tag" \
    | awk '{printf "%.0f MB", $1 / 1e6}'))"
