"""Remote policy serving: a checkpoint behind gRPC and HTTP (server.py), and a client with
Policy's interface (client.py). Importing this package is cheap; grpc and torch load with the
modules that need them."""


class PolicyUnavailable(RuntimeError):
    """The remote policy could not answer in time: the server is unreachable, too slow, failed, or
    now serves a model that does not fit. Not the observation's fault (that is a ValueError): the
    caller holds the robot and tries again."""
