"""The policy node with its model on a policy server (librobot_models.serve) over real gRPC: chunks
as with a local model; a server that stops, or answers too slowly, holds the arm and the node goes on
when it answers again; `policy_endpoint` switches live between the server and the local checkpoint."""

import sys
import time
from pathlib import Path

import pytest
from librobot_msgs.msg import PolicyStatus
from rclpy.parameter import Parameter

sys.path.insert(0, str(Path(__file__).parent))
from test_policy_node import Harness  # noqa: E402

from librobot_models.policy import Policy  # noqa: E402
from librobot_models.serving.server import PolicyHost, PolicyServer, ServerSettings  # noqa: E402


def start_server(host, port=0):
    server = PolicyServer(host, ServerSettings(grpc_port=port))
    server.start()
    return server


class Delayed:
    """A Policy whose inference can be made slow while it serves."""

    delay_s = 0.0

    def __init__(self, policy):
        self.policy = policy

    def infer(self, obs, inpaint=None):
        time.sleep(Delayed.delay_s)
        return self.policy.infer(obs, inpaint)

    def __getattr__(self, name):
        return getattr(self.policy, name)


def held(h, words):
    return any(s.state == PolicyStatus.STATE_HOLDING and words in s.message for s in h.statuses)


@pytest.fixture
def server(tiny_checkpoint):
    Delayed.delay_s = 0.0
    server = start_server(PolicyHost(lambda: Delayed(Policy.from_checkpoint(tiny_checkpoint))))
    yield server
    server.stop(0)


def test_a_stopped_policy_server_holds_the_arm_and_a_restarted_one_drives_again(
        ros_context, spin, tiny_checkpoint, server):
    port = server.grpc_port
    h = Harness(ros_context, tiny_checkpoint, policy_endpoint=f"grpc://127.0.0.1:{port}", policy_timeout_s=0.5)
    try:
        assert spin(h.executor, lambda: h.publish() or len(h.chunks) >= 3, timeout_s=30.0), [s.message for s in h.statuses]
        assert h.chunks[-1].checkpoint_id == server.host.metadata["checkpoint_id"]
        server.stop(0)
        assert spin(h.executor, lambda: h.publish() or held(h, f"policy server grpc://127.0.0.1:{port}"),
                    timeout_s=30.0), [s.message for s in h.statuses]
        n_chunks, n_trajectories = len(h.chunks), len(h.trajectories)
        spin(h.executor, lambda: h.publish() or False, timeout_s=1.5)
        assert len(h.chunks) == n_chunks  # nothing planned while the server is gone ...
        assert len(h.trajectories) <= n_trajectories + 1  # ... and at most the one hold was sent
        restarted = start_server(PolicyHost.from_checkpoint(tiny_checkpoint), port)
        try:
            assert spin(h.executor, lambda: h.publish() or len(h.chunks) >= n_chunks + 3, timeout_s=30.0), \
                [s.message for s in h.statuses[-3:]]
            assert h.statuses[-1].state == PolicyStatus.STATE_RUNNING or len(h.chunks) > n_chunks
        finally:
            restarted.stop(0)
    finally:
        h.close()


def test_a_policy_server_slower_than_the_timeout_holds_the_arm_until_it_is_fast_again(
        ros_context, spin, tiny_checkpoint, server):
    h = Harness(ros_context, tiny_checkpoint, policy_endpoint=f"127.0.0.1:{server.grpc_port}", policy_timeout_s=0.3)
    try:
        assert spin(h.executor, lambda: h.publish() or len(h.chunks) >= 2, timeout_s=30.0), [s.message for s in h.statuses]
        Delayed.delay_s = 1.0
        assert spin(h.executor, lambda: h.publish() or held(h, "no answer within 0.3 s"), timeout_s=30.0), \
            [s.message for s in h.statuses]
        n_chunks = len(h.chunks)
        Delayed.delay_s = 0.0
        assert spin(h.executor, lambda: h.publish() or len(h.chunks) >= n_chunks + 2, timeout_s=30.0)
    finally:
        h.close()


def test_policy_endpoint_switches_live_between_the_server_and_the_local_checkpoint(
        ros_context, spin, tiny_checkpoint, tiny_octo_checkpoint):
    octo = start_server(PolicyHost.from_checkpoint(tiny_octo_checkpoint))
    h = Harness(ros_context, tiny_checkpoint)
    try:
        assert spin(h.executor, lambda: h.publish() or len(h.chunks) >= 2, timeout_s=30.0)
        assert h.chunks[-1].framework == "act"
        refused = h.policy.set_parameters([Parameter("policy_endpoint", value="grpc://nowhere")])[0]
        assert not refused.successful and "expected host:port" in refused.reason
        endpoint = f"grpc://127.0.0.1:{octo.grpc_port}"
        assert h.policy.set_parameters([Parameter("policy_endpoint", value=endpoint)])[0].successful
        assert spin(h.executor, lambda: h.publish() or h.chunks[-1].framework == "octo", timeout_s=30.0)
        refused = h.policy.set_parameters([Parameter("checkpoint", value=str(tiny_checkpoint))])[0]
        assert not refused.successful and "set policy_endpoint to ''" in refused.reason
        assert h.policy.set_parameters([Parameter("policy_endpoint", value="")])[0].successful
        assert spin(h.executor, lambda: h.publish() or h.chunks[-1].framework == "act", timeout_s=30.0)
        sequences = [c.sequence for c in h.chunks]
        assert sequences == list(range(len(sequences)))  # one stream across both switches
    finally:
        h.close()
        octo.stop(0)


def test_a_malformed_endpoint_at_start_up_is_refused_with_its_reason(ros_context, tiny_checkpoint):
    h = Harness(ros_context, tiny_checkpoint, policy_endpoint="gpu-box")  # no port: not a checkpoint either
    try:
        assert h.policy.policy is None and h.policy._state == PolicyStatus.STATE_ERROR
        assert "policy endpoint 'gpu-box': expected host:port" in h.policy._message
    finally:
        h.close()
