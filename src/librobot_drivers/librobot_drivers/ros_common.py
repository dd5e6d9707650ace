"""What every LibroBot node shares: QoS profiles for our topics and the `main` boilerplate."""

from __future__ import annotations

import signal
import sys
from typing import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

# The instruction: late joiners get the current one (like `ros2 topic pub --qos-durability
# transient_local`, what the fixture bags record).
LATCHED = QoSProfile(
    depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
)
# Episode events: a recorder or policy that starts late still sees the boundaries so far.
EPISODE_EVENTS = QoSProfile(
    depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
)


def run_node(make_node: Callable[[], Node], program: str, threads: int = 1, args=None) -> int:
    """rclpy.init, build the node, spin until Ctrl-C or SIGTERM (`ros2 launch` sends SIGINT, then
    SIGTERM); bad parameters (ValueError, or a value outside a parameter's declared range) end
    with one readable line and exit code 2 instead of a traceback."""
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, ParameterException) as err:
        print(f"{program}: error: {err}", file=sys.stderr)
        return 2
    finally:
        # A second Ctrl-C (or launch's follow-up signal) must not cut the clean-up short.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
