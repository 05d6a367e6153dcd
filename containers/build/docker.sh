# shellcheck shell=bash
# Part of ./build.sh, which sources it (its settings and helpers: say, die, image, ...).
# Docker: the daemon, BuildKit, and the base image every image starts FROM.

ensure_docker() {
    if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
        if command -v apt-get >/dev/null; then
            say "installing docker.io and debootstrap (apt-get)"
            as_root apt-get update -qq
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
        fi
    fi
    command -v docker >/dev/null || die "no docker client; install docker.io"
    if ! docker info >/dev/null 2>&1; then
        command -v dockerd >/dev/null || die "no Docker daemon and no dockerd to start"
        say "starting dockerd (log: $DOCKERD_LOG)"
        as_root mkdir -p "$(dirname "$DOCKERD_LOG")"
        # No iptables/bridge here: every build and run uses --network none anyway.
        as_root sh -c "nohup dockerd --storage-driver=overlay2 --iptables=false --bridge=none >>'$DOCKERD_LOG' 2>&1 &"
        for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
        docker info >/dev/null 2>&1 || die "dockerd did not come up; see $DOCKERD_LOG"
    fi
    # BuildKit is needed for RUN --mount. docker >= 23 builds with the buildx plugin; the
    # docker.io 20.10 client has BuildKit built in.
    BUILD_CMD=()
    if docker buildx version >/dev/null 2>&1; then
        BUILD_CMD=(docker buildx build --load)
    else
        local client major
        for client in docker /usr/bin/docker; do
            command -v "$client" >/dev/null || continue
            major=$("$client" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1) || true
            if [ -n "$major" ] && [ "$major" -lt 23 ]; then
                BUILD_CMD=(env DOCKER_BUILDKIT=1 "$client" build); break
            fi
        done
    fi
    [ ${#BUILD_CMD[@]} -gt 0 ] || die "BuildKit needed: install the buildx plugin (docker-buildx) or docker.io 20.10"
}

# Every image build.sh makes carries the label palm.build, so tidy_docker can tell its own.
docker_build() { "${BUILD_CMD[@]}" --network none --progress "${PALM_PROGRESS:-plain}" --label palm.build=build.sh "$@"; }

tidy_docker() {
    # A rebuild moves each tag to a new image and leaves the old one untagged, and BuildKit keeps
    # a copy of every build context and layer it made (a clone in a new folder copies the 3 GB
    # CUDA wheelhouse again): tens of GB within a day of rebuilds. Drop our untagged images and
    # keep BuildKit's cache to PALM_BUILD_CACHE (default 10GB: one warm CPU and CUDA rebuild).
    docker image prune -f --filter label=palm.build=build.sh >/dev/null || true
    docker builder prune -f --keep-storage "${PALM_BUILD_CACHE:-10GB}" >/dev/null 2>&1 || true
    say "Docker's disk after tidying: $(docker system df --format '{{.Type}} {{.Size}}' 2>/dev/null | paste -sd, - | sed 's/,/, /g')"
}

# -- base image --------------------------------------------------------------------------------

ensure_base_image() {
    BASE=${PALM_BASE_IMAGE:-auto}
    [ "$BASE" != auto ] && { have_image "$BASE" || docker pull "$BASE" >&2; return; }
    if have_image python:3.11-slim; then BASE=python:3.11-slim; return; fi
    if have_image "$LOCAL_BASE"; then BASE=$LOCAL_BASE; return; fi
    if timeout 120 docker pull -q python:3.11-slim >/dev/null 2>&1; then BASE=python:3.11-slim; return; fi
    say "Docker Hub out of reach: making $LOCAL_BASE with debootstrap (Debian bookworm, Python 3.11)"
    command -v debootstrap >/dev/null || die "debootstrap is not installed"
    local dir t0=$(date +%s)
    dir=$(mktemp -d /var/tmp/palm-rootfs.XXXXXX)
    as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1 \
        bookworm "$dir" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { as_root rm -rf "$dir"; die "debootstrap failed; see $WORK/debootstrap.log"; }
    as_root sh -c "rm -rf '$dir'/var/cache/apt/*.bin '$dir'/var/cache/apt/archives/*.deb '$dir'/var/lib/apt/lists/* \
        '$dir'/usr/share/doc/* '$dir'/usr/share/man/* '$dir'/usr/share/locale/* '$dir'/usr/share/info/*"
    as_root tar -C "$dir" -c . | docker import -c 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >/dev/null
    as_root rm -rf "$dir"
    BASE=$LOCAL_BASE
    say "made $LOCAL_BASE in $(( $(date +%s) - t0 )) s"
}
