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

from librobot_drivers.robot import RobotIOError

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
    SIGTERM); bad parameters (ValueError, a missing file, or a value outside a parameter's
    declared range) end with one readable line and exit code 2 instead of a traceback, hardware
    that does not answer with one line and exit code 1.

    Ctrl-C while the node is being built (loading a model takes seconds) interrupts at once. Once
    it spins, rclpy's own handler (which runs first) shuts the context down and the executor
    returns; no KeyboardInterrupt is raised then, as one raised between two bytecodes of the
    executor leaves half-built objects that complain when collected."""
    starting = True

    def on_sigint(signum, frame):  # called after rclpy's handler, which it chains to
        if starting:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        starting = False
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError, ParameterException) as err:
        print(f"{program}: error: {err}", file=sys.stderr)
        return 2
    except RobotIOError as err:  # the hardware does not answer (unplugged, wrong port, ...)
        print(f"{program}: error: {err}", file=sys.stderr)
        return 1
    except Exception:
        if rclpy.ok():
            raise
        # Ctrl-C during start-up shut the context down under the node being built: a clean stop
    finally:
        # A second Ctrl-C (or launch's follow-up signal) must not cut the clean-up short.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
