"""Plays kubelet against our device plugin with Python grpcio.

usage: fake_kubelet.py <device-plugin dir> <dir with generated kubelet_api_pb2*.py>

Serves Registration on <dir>/kubelet.sock, waits for the plugin's Register,
then dials the endpoint it named twice: once as kubelet >= 1.26 does
(:authority localhost) and once as older kubelets did (:authority = the
socket path). Each time: GetDevicePluginOptions, ListAndWatch (first list),
GetPreferredAllocation, Allocate of a free device, Allocate of an unknown
one. Prints PASS and exits 0, or prints what was wrong and exits 1.
"""

import os
import sys
import threading
from concurrent import futures

import grpc

DP_DIR, GEN_DIR = sys.argv[1], sys.argv[2]
sys.path.insert(0, GEN_DIR)
import kubelet_api_pb2 as pb  # noqa: E402
import kubelet_api_pb2_grpc as pbg  # noqa: E402

RESOURCE = "interop.example.com/vf"


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


class Registrar(pbg.RegistrationServicer):
    def __init__(self):
        self.request = None
        self.done = threading.Event()

    def Register(self, request, context):
        self.request = request
        self.done.set()
        return pb.Empty()


def drive(endpoint_path, authority, device_id):
    options = [("grpc.default_authority", authority)] if authority else []
    how = "authority=" + (authority or "default")
    with grpc.insecure_channel("unix://" + endpoint_path, options=options) as ch:
        stub = pbg.DevicePluginStub(ch)
        opts = stub.GetDevicePluginOptions(pb.Empty(), timeout=10)
        check(opts.get_preferred_allocation_available, how + ": preferred allocation not advertised")

        stream = stub.ListAndWatch(pb.Empty(), timeout=10)
        first = next(stream)
        stream.cancel()
        ids = [d.ID for d in first.devices]
        check(ids == ["0000:3b:02.0", "0000:3b:02.1"], how + ": devices %r" % ids)
        for d in first.devices:
            check(d.health == "Healthy", how + ": health %r" % d.health)
            check([n.ID for n in d.topology.nodes] == [0], how + ": topology %r" % d.topology)

        pref = stub.GetPreferredAllocation(
            pb.PreferredAllocationRequest(
                container_requests=[
                    pb.ContainerPreferredAllocationRequest(
                        available_deviceIDs=ids, must_include_deviceIDs=[device_id], allocation_size=1
                    )
                ]
            ),
            timeout=10,
        )
        check(list(pref.container_responses[0].deviceIDs) == [device_id], how + ": preferred %r" % pref)

        resp = stub.Allocate(
            pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[device_id])]),
            timeout=10,
        )
        check(len(resp.container_responses) == 1, how + ": %d responses" % len(resp.container_responses))
        envs = dict(resp.container_responses[0].envs)
        check(envs.get("NSM_SRIOV_TOKENS_vf") == device_id, how + ": envs %r" % envs)

        try:
            stub.Allocate(
                pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["0000:99:00.0"])]),
                timeout=10,
            )
            fail(how + ": unknown device was allocated")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.NOT_FOUND, how + ": unknown device gave %s" % e.code())
    print("ok: " + how, flush=True)


def main():
    registrar = Registrar()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pbg.add_RegistrationServicer_to_server(registrar, server)
    server.add_insecure_port("unix://" + os.path.join(DP_DIR, "kubelet.sock"))
    server.start()
    print("kubelet.sock serving", flush=True)
    if not registrar.done.wait(60):
        fail("the plugin never called Register")
    r = registrar.request
    check(r.version == "v1beta1", "version %r" % r.version)
    check(r.resource_name == RESOURCE, "resource %r" % r.resource_name)
    check("/" not in r.endpoint and r.endpoint.endswith(".sock"), "endpoint %r" % r.endpoint)
    check(r.options.get_preferred_allocation_available, "options %r" % r.options)
    print("ok: Register %s %s" % (r.resource_name, r.endpoint), flush=True)

    endpoint_path = os.path.join(DP_DIR, r.endpoint)
    drive(endpoint_path, None, "0000:3b:02.0")
    drive(endpoint_path, endpoint_path, "0000:3b:02.1")
    server.stop(0)
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
