#!/usr/bin/env bash
# Builds the local control plane from the Go module proxy into a cache outside the repo:
# kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes), etcd and kwok.
# Each binary is built only when missing. Nothing is downloaded but Go modules.
#
#   tests/cluster/build.sh            # the control plane; prints where the binaries are
#   tests/cluster/build.sh promtool   # only promtool (alert rule tests); prints its path
#   tests/cluster/build.sh helm       # only helm (chart tests); prints its path
#   tests/cluster/build.sh versitygw  # only versitygw (the S3 server of the artifact tests)
#   tests/cluster/build.sh monitoring-crds  # the Prometheus Operator's CRDs (source module);
#                                           # prints their directory
#   BRAID_CACHE=/somewhere tests/cluster/build.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${BRAID_CACHE:-$HOME/.cache/braid}"
bin="$cache/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
src="$cache/src"
mkdir -p "$bin" "$src"
export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
staging="v0.${K8S_VERSION#v1.}"

build_kubernetes() {
  local dir="$src/kubernetes-$K8S_VERSION"
  mkdir -p "$dir"
  cd "$dir"
  if [ ! -f go.mod ]; then
    log "writing a wrapper module for k8s.io/kubernetes $K8S_VERSION"
    local upstream
    upstream="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    {
      echo "module braid.local/kubernetes-build"
      echo
      echo "go 1.26.0"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      # k8s.io/kubernetes points its staging modules at ./staging; a dependent module must
      # name their published versions instead (v0.Y.Z for Kubernetes v1.Y.Z).
      grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$upstream" \
        | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
    } > go.mod
  fi
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
    -X k8s.io/component-base/version.gitTreeState=clean"
  local missing=()
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    [ -x "$bin/$cmd" ] || missing+=("k8s.io/kubernetes/cmd/$cmd")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "resolving modules for ${missing[*]} (first time: downloads several hundred MB)"
    go get "${missing[@]/%/@$K8S_VERSION}" >/dev/null 2>&1 || go get "${missing[@]}"
    log "compiling ${missing[*]} (first time: 10-20 minutes on 2 cores)"
    go build -ldflags "$ldflags" -o "$bin/" "${missing[@]}"
    log "built $(cd "$bin" && ls kube-*)"
  fi
}

build_etcd() {
  [ -x "$bin/etcd" ] && return
  local dir="$src/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  cd "$dir"
  cat > go.mod <<MOD
module braid.local/etcd-build

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  # etcd's own main is a one-line call into etcdmain; this wrapper is that line.
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  log "compiling etcd $ETCD_VERSION"
  go mod tidy >/dev/null 2>&1 || go mod tidy
  go build -ldflags "-s -w" -o "$bin/etcd" .
}

build_promtool() {
  local dir="$cache/bin/promtool-$PROMTOOL_VERSION"
  if [ ! -x "$dir/promtool" ]; then
    log "compiling promtool $PROMTOOL_VERSION (first time: a few minutes)"
    mkdir -p "$dir"
    GOBIN="$dir" go install -ldflags "-s -w" "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
  fi
  echo "$dir/promtool"
}

build_helm() {
  local dir="$cache/bin/helm-$HELM_VERSION"
  if [ ! -x "$dir/helm" ]; then
    log "compiling helm $HELM_VERSION (first time: a few minutes)"
    mkdir -p "$dir"
    local major="${HELM_VERSION%%.*}"
    GOBIN="$dir" go install -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION" \
      "helm.sh/helm/$major/cmd/helm@$HELM_VERSION"
  fi
  echo "$dir/helm"
}

build_versitygw() {
  local dir="$cache/bin/versitygw-$VERSITYGW_VERSION"
  if [ ! -x "$dir/versitygw" ]; then
    log "compiling versitygw $VERSITYGW_VERSION (first time: a few minutes)"
    mkdir -p "$dir"
    GOBIN="$dir" go install -ldflags "-s -w" "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  fi
  echo "$dir/versitygw"
}

monitoring_crds() {
  local dir
  dir="$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
    | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  echo "$dir/example/prometheus-operator-crd"
}

build_kwok() {
  [ -x "$bin/kwok" ] && return
  log "compiling kwok $KWOK_VERSION"
  GOBIN="$bin" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
}

case "${1:-}" in
  promtool) build_promtool; exit 0 ;;
  helm) build_helm; exit 0 ;;
  versitygw) build_versitygw; exit 0 ;;
  monitoring-crds) monitoring_crds; exit 0 ;;
esac
start=$(date +%s)
build_etcd
build_kwok
build_kubernetes
log "ready in $(( $(date +%s) - start ))s: $bin"
echo "$bin"
