"""LeRobot's stock gRPC policy server with injected reply faults (tests and the chaos suite only).

``python -m async_vla_ros.eval.grpc_fault_server --fault=nan|shape|error --fault_every=N
--host=127.0.0.1 --port=P [--fps=20 --inference_latency=0]``: the stock
``lerobot.async_inference.policy_server.PolicyServer`` serves as usual; every N-th chunk it
computes is corrupted before it is sent: ``nan`` (one action NaN), ``shape`` (the last action
dropped), ``error`` (inference raises: the stock server then answers an empty message). Binds
127.0.0.1 only. A slow server needs no fault: the stock ``--inference_latency`` pads every reply.
"""

from __future__ import annotations

import argparse
import sys
from concurrent import futures

FAULTS = ("nan", "shape", "error")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault", choices=FAULTS, required=True)
    parser.add_argument("--fault_every", type=int, default=1)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fps", type=int, default=20)
    parser.add_argument("--inference_latency", type=float, default=0.0)
    ns = parser.parse_args(argv)
    if ns.host != "127.0.0.1":
        print("grpc_fault_server: binds 127.0.0.1 only (a test server)", file=sys.stderr)
        return 2
    if ns.fault_every < 1:
        print("grpc_fault_server: --fault_every must be >= 1", file=sys.stderr)
        return 2

    from async_vla_ros.hfenv import apply_hf_offline

    apply_hf_offline()
    import grpc
    import torch
    from lerobot.async_inference.configs import PolicyServerConfig
    from lerobot.async_inference.policy_server import PolicyServer
    from lerobot.transport import services_pb2_grpc

    class FaultyPolicyServer(PolicyServer):
        n_chunks = 0

        def _predict_action_chunk(self, observation_t):
            type(self).n_chunks += 1
            hit = self.n_chunks % ns.fault_every == 0
            if hit and ns.fault == "error":
                raise RuntimeError(f"injected inference fault on chunk {self.n_chunks}")
            chunk = super()._predict_action_chunk(observation_t)
            if hit and ns.fault == "nan":
                chunk[0].action = torch.full_like(chunk[0].action, float("nan"))
            elif hit and ns.fault == "shape":
                chunk = chunk[:-1]
            return chunk

    cfg = PolicyServerConfig(host=ns.host, port=ns.port, fps=ns.fps, inference_latency=ns.inference_latency)
    servicer = FaultyPolicyServer(cfg)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    services_pb2_grpc.add_AsyncInferenceServicer_to_server(servicer, server)
    server.add_insecure_port(f"{ns.host}:{ns.port}")
    server.start()
    print(f"fault server ({ns.fault} every {ns.fault_every}) on {ns.host}:{ns.port}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
