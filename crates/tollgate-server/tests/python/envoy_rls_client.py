"""A grpcio client of tollgate's Envoy rate limit service, built on Envoy's published protos
(the PyPI package xds-protos), as an Envoy user's own tooling would call it. Run by
crates/tollgate-server/tests/grpc_python.rs with the gRPC address; prints what it saw as JSON.
"""

import json
import sys

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

RLS = "envoy.service.ratelimit.v3.RateLimitService"


def descriptor(*entries, limit=None):
    d = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )
    if limit is not None:
        per, unit = limit
        d.limit.requests_per_unit = per
        d.limit.unit = unit
    return d


def statuses(response):
    return [
        {
            "code": rls_pb2.RateLimitResponse.Code.Name(s.code),
            "remaining": s.limit_remaining,
            "limit": s.current_limit.name if s.HasField("current_limit") else None,
            "per_unit": s.current_limit.requests_per_unit,
            "unit": rls_pb2.RateLimitResponse.RateLimit.Unit.Name(s.current_limit.unit),
        }
        for s in response.statuses
    ]


def main(addr):
    seen = {}
    with grpc.insecure_channel(addr) as channel:
        rls = rls_pb2_grpc.RateLimitServiceStub(channel)
        route = [descriptor(("tenant", "t")), descriptor(("tenant", "t"), ("model", "m"))]
        seen["route"] = []
        for _ in range(3):
            r = rls.ShouldRateLimit(rls_pb2.RateLimitRequest(domain="edge", descriptors=route))
            seen["route"].append(
                {"overall": rls_pb2.RateLimitResponse.Code.Name(r.overall_code), "statuses": statuses(r)}
            )
        own = [descriptor(("tenant", "o"), limit=(1, rls_pb2.RateLimitResponse.RateLimit.Unit.Value("WEEK")))]
        seen["own"] = [
            statuses(rls.ShouldRateLimit(rls_pb2.RateLimitRequest(domain="edge", descriptors=own)))
            for _ in range(2)
        ]
        try:
            rls.ShouldRateLimit(rls_pb2.RateLimitRequest(domain="", descriptors=route))
            seen["empty_domain"] = "OK"
        except grpc.RpcError as e:
            seen["empty_domain"] = e.code().name

        health = health_pb2_grpc.HealthStub(channel)
        seen["health"] = {
            name or "(server)": health_pb2.HealthCheckResponse.ServingStatus.Name(
                health.Check(health_pb2.HealthCheckRequest(service=name)).status
            )
            for name in ["", RLS]
        }

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        asks = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=RLS),
        ]
        answers = list(reflection.ServerReflectionInfo(iter(asks)))
        seen["services"] = sorted(s.name for s in answers[0].list_services_response.service)
        seen["rls_file_descriptors"] = len(answers[1].file_descriptor_response.file_descriptor_proto)
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1])
