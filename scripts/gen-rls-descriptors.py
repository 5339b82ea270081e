"""Writes crates/tollgate-server/proto/rls_descriptors.bin: the FileDescriptorSet of Envoy's
rate limit service (envoy/service/ratelimit/v3/rls.proto) and every file it imports, from
Envoy's published protos (the PyPI package xds-protos, pinned in scripts/requirements-test.txt).
The gRPC port's server reflection serves it, so that grpcurl and other reflection clients can
call ShouldRateLimit without the protos.

Run with the test environment's Python: .venv/bin/python scripts/gen-rls-descriptors.py
(crates/tollgate-server/tests/grpc_python.rs checks that the committed file is current).
"""

import pathlib
import sys

from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import descriptor_pb2

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/tollgate-server/proto/rls_descriptors.bin"


def closure(fd, seen, out):
    """Appends `fd` after every file it imports, each once."""
    if fd.name in seen:
        return
    seen.add(fd.name)
    for dep in fd.dependencies:
        closure(dep, seen, out)
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    out.append(proto)


def descriptor_set():
    files = []
    closure(rls_pb2.DESCRIPTOR, set(), files)
    return descriptor_pb2.FileDescriptorSet(file=files).SerializeToString(deterministic=True)


if __name__ == "__main__":
    data = descriptor_set()
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if OUT.read_bytes() == data else "rls_descriptors.bin is not current: run scripts/gen-rls-descriptors.py")
    OUT.write_bytes(data)
    print(f"{OUT}: {len(data)} bytes")
