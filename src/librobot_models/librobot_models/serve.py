"""Serve a checkpoint to robots and other clients: gRPC (policy.proto) and HTTP/JSON.

    python -m librobot_models.serve --checkpoint runs/act_so100              # gRPC on 127.0.0.1:50051
    python -m librobot_models.serve --checkpoint DIR --http-port 8000        # and HTTP
    LIBROBOT_POLICY_TOKEN=secret python -m librobot_models.serve --checkpoint DIR --address 0.0.0.0 \
        --tls-cert cert.pem --tls-key key.pem                               # reachable from the robot

It binds to loopback unless told otherwise; any other address needs TLS and a token (clients send
`authorization: Bearer <token>`). A ROS robot uses it through the policy node's `policy_endpoint`
parameter; other clients through librobot_models.serving.client.RemotePolicy or plain HTTP.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

TOKEN_ENV = "LIBROBOT_POLICY_TOKEN"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="librobot-serve", description=__doc__.split("\n\n")[0],
                                     epilog=f"the token comes from ${TOKEN_ENV} (never the command line)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=50051, help="gRPC port (default 50051; 0: any free)")
    parser.add_argument("--http-port", type=int, default=None, help="also serve HTTP/JSON on this port")
    parser.add_argument("--no-grpc", action="store_true", help="HTTP only")
    parser.add_argument("--tls-cert", help="PEM certificate chain: TLS on every port")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--workers", type=int, default=8, help="requests served at once (default 8)")
    parser.add_argument("--max-sessions", type=int, default=32, help="client sessions kept (default 32)")
    parser.add_argument("--max-message-mb", type=float, default=32.0, help="largest request or reply (MiB)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from librobot_models.serving.server import PolicyHost, PolicyServer, ServerSettings

    try:
        settings = ServerSettings(
            address=args.address, grpc_port=None if args.no_grpc else args.port, http_port=args.http_port,
            token=os.environ.get(TOKEN_ENV) or None, tls_cert=args.tls_cert, tls_key=args.tls_key,
            max_message_mb=args.max_message_mb, workers=args.workers)
        if args.threads > 0:
            import torch

            torch.set_num_threads(args.threads)
        host = PolicyHost.from_checkpoint(args.checkpoint, args.device, args.max_sessions)
        server = PolicyServer(host, settings)
        server.start()
    except (ValueError, OSError) as err:
        print(f"librobot-serve: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    meta = host.metadata
    where = [f"gRPC {args.address}:{server.grpc_port}"] if server.grpc_port else []
    where += [f"HTTP {args.address}:{server.http_port}"] if server.http_port else []
    print(f"serving {meta['framework']} {meta['checkpoint_id']} ({meta['chunk_size']} x {meta['action_dim']} "
          f"at {meta['rate_hz']:g} Hz, cameras {meta['camera_names']}) on {' and '.join(where)}"
          + (" with TLS" if args.tls_cert else "") + (" and a token" if settings.token else ""), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
