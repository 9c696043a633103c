#!/usr/bin/env bash
# Python gRPC for the grpc-interop suite: an independent gRPC stack (grpcio,
# C core) plays kubelet against our device plugin to catch wire mistakes
# our own generated code would share. Pinned so CI runs are repeatable.
#
# A failed install does not stop CI: the suite then reports SKIPPED with
# the reason, and every other suite still runs.
set -uo pipefail
if python3 -c 'import grpc, grpc_tools' >/dev/null 2>&1; then
  exit 0
fi
if ! python3 -m pip install --quiet --disable-pip-version-check \
  'grpcio==1.85.1' 'grpcio-tools==1.85.1'; then
  echo "setup python-grpc: installing grpcio/grpcio-tools failed; grpc-interop will be skipped" >&2
fi
exit 0
