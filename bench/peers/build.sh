#!/usr/bin/env bash
# Builds the peer controllers of the side-by-side benchmark from the Go module proxy into the
# cache outside the repo, each only when missing: Argo Workflows' workflow-controller and
# Tekton Pipelines' controller. `go install pkg@version` cannot be used here: the proxy refuses
# version lists (go install reads one for deprecation notices) and Argo's go.mod carries a
# replace directive; so each is built from a wrapper module that requires it (as
# tests/cluster/build.sh builds Kubernetes). Nothing is downloaded but Go modules. Not used by
# CI: the peers are for bench/peers/, never for the tests.
#
#   bench/peers/build.sh argo     # prints the workflow-controller's path
#   bench/peers/build.sh tekton   # prints the Tekton controller's path
#   bench/peers/build.sh source argo|tekton   # prints the module's source directory (CRDs)
set -euo pipefail
ARGO_VERSION=v3.7.18
TEKTON_VERSION=v1.15.0
cache="${BRAID_CACHE:-$HOME/.cache/braid}"
bin="$cache/bin/peers"
src="$cache/src/peers"
mkdir -p "$bin" "$src"
export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local

log() { printf '[peers %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# wrapper NAME MODULE VERSION PACKAGE: a module requiring MODULE@VERSION, with its replace
# directives repeated, and a tools file importing PACKAGE so `go mod tidy` records go.sum.
wrapper() {
  local name="$1" module="$2" version="$3" package="$4"
  local dir="$src/$name-$version"
  mkdir -p "$dir"
  if [ ! -f "$dir/go.mod" ]; then
    log "writing a wrapper module for $module $version"
    local upstream
    upstream="$(cd "$dir" && go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    {
      echo "module braid.local/$name-build"
      echo
      echo "go 1.26.0"
      echo
      echo "require $module $version"
      echo
      grep -E '^replace ' "$upstream" || true
      # replace ( ... ) blocks
      awk '/^replace \($/{f=1;next} f&&/^\)$/{f=0} f{print "replace " $0}' "$upstream"
    } > "$dir/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$package" > "$dir/tools.go"
    (cd "$dir" && go mod tidy >/dev/null 2>&1 || go mod tidy)
  fi
  echo "$dir"
}

build() {
  local name="$1" module="$2" version="$3" package="$4" binary="$5"
  local target="$bin/$binary-$version"
  if [ ! -x "$target" ]; then
    local dir
    dir="$(wrapper "$name" "$module" "$version" "$package")"
    log "compiling $package (first time: 8-15 minutes on 2 cores)"
    (cd "$dir" && go build -ldflags "-s -w" -o "$target" "$package")
    log "built $target"
  fi
  echo "$target"
}

case "${1:-}" in
  argo)
    build argo github.com/argoproj/argo-workflows/v3 "$ARGO_VERSION" \
      github.com/argoproj/argo-workflows/v3/cmd/workflow-controller workflow-controller ;;
  tekton)
    build tekton github.com/tektoncd/pipeline "$TEKTON_VERSION" \
      github.com/tektoncd/pipeline/cmd/controller tekton-controller ;;
  source)
    case "${2:-}" in
      argo) module=github.com/argoproj/argo-workflows/v3 version=$ARGO_VERSION ;;
      tekton) module=github.com/tektoncd/pipeline version=$TEKTON_VERSION ;;
      *) echo "usage: $0 source argo|tekton" >&2; exit 2 ;;
    esac
    go mod download -json "$module@$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p' ;;
  *) echo "usage: $0 argo|tekton|source argo|tekton" >&2; exit 2 ;;
esac
