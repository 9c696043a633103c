#!/usr/bin/env bash
# Python gRPC for the grpc-interop suite: an independent gRPC stack (grpcio,
# C core) plays kubelet against our device plugin to catch wire mistakes
# our own generated code would share. Pinned so CI runs are repeatable.
set -euo pipefail
if python3 -c 'import grpc, grpc_tools' >/dev/null 2>&1; then
  exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check \
  'grpcio==1.85.1' 'grpcio-tools==1.85.1'
