"""The policy node on real rclpy messages: observations in, a valid stamped JointTrajectory out."""

import time

import numpy as np
import pytest
from librobot_msgs.msg import ActionChunk, PolicyStatus
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import Marker

from librobot_drivers import messages
from librobot_drivers.embodiment import load_embodiment
from librobot_policy_node.markers import LINE_WIDTH, chunk_markers
from librobot_policy_node.policy_node import PolicyNode

SPEC = load_embodiment("so100")
CHUNK = 10  # the tiny_checkpoint fixture's chunk size
CAMERA_PERIOD_S = 1 / 30


class Harness:
    """Publishes observations like a driver and collects what the policy node sends."""

    def __init__(self, context, checkpoint, **params):
        # random weights predict targets anywhere: the max-step check has its own test
        params = {"replan_steps": 1, "max_step": 10.0, **params}
        overrides = [Parameter("checkpoint", value=str(checkpoint))]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        self.policy = PolicyNode(context=context, parameter_overrides=overrides)
        self.robot = Node("fake_driver", context=context)
        self.joints = self.robot.create_publisher(JointState, "/joint_states", 10)
        self.camera = self.robot.create_publisher(Image, "/camera/front/image_raw", 10)
        self.trajectories, self.chunks, self.statuses = [], [], []
        self.robot.create_subscription(JointTrajectory, SPEC.command_topic, self.trajectories.append, 10)
        self.robot.create_subscription(ActionChunk, "/policy/action_chunk", self.chunks.append, 10)
        self.robot.create_subscription(PolicyStatus, "/policy/status", self.statuses.append, 10)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.policy)
        self.executor.add_node(self.robot)
        self._last_publish = -1.0
        self.camera_period_s = CAMERA_PERIOD_S

    def publish(self, stamp_ns=None, encoding="rgb8"):
        """Send one joint state and one frame, at most at a camera's 30 Hz. Unpaced, the test's
        loop never waits, and the GIL handover after each of the model's torch ops (up to the
        5 ms switch interval) stretched one inference past the whole chunk."""
        if time.monotonic() - self._last_publish < self.camera_period_s:
            return
        self._last_publish = time.monotonic()
        stamp = messages.time_from_ns(stamp_ns if stamp_ns is not None else
                                      self.robot.get_clock().now().nanoseconds)
        state = JointState()
        state.header.stamp = stamp
        # LeRobot-style names, in another order: the node maps them through the embodiment.
        state.name = ["gripper", "shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"]
        state.position = [0.5, 0.1, -0.2, 0.3, 0.0, 0.0]
        self.joints.publish(state)
        image = messages.image_msg(np.full((120, 160, 3), 90, np.uint8), stamp, "front_camera")
        image.encoding = encoding
        self.camera.publish(image)

    def close(self):
        self.executor.shutdown()
        self.policy.destroy_node()
        self.robot.destroy_node()


def test_node_turns_observations_into_a_valid_stamped_trajectory(ros_context, spin, tiny_checkpoint):
    h = Harness(ros_context, tiny_checkpoint)
    try:
        def feed():
            h.publish()
            return len(h.chunks) >= 3 and len(h.trajectories) >= 3
        assert spin(h.executor, feed, timeout_s=30.0), [s.message for s in h.statuses]
        trajectory, chunk = h.trajectories[-1], h.chunks[-1]
        assert list(trajectory.joint_names) == SPEC.joint_names
        tfs = np.array([messages.to_seconds(p.time_from_start) for p in trajectory.points])
        assert 1 <= len(tfs) <= CHUNK and np.allclose(np.diff(tfs), 0.1)
        assert np.allclose(tfs / 0.1, np.round(tfs / 0.1))  # on the control grid
        start = messages.to_nanoseconds(trajectory.header.stamp)
        # every point is due after the chunk was published (past points are dropped)
        assert start + int(tfs[0] * 1e9) > messages.to_nanoseconds(chunk.header.stamp) - 1
        positions = np.array([p.positions for p in trajectory.points])
        assert np.all(positions >= SPEC.lower_limits - 1e-9) and np.all(positions <= SPEC.upper_limits + 1e-9)
        assert all(len(p.velocities) == 6 for p in trajectory.points)
        assert chunk.framework == "act" and chunk.checkpoint_id
        assert list(chunk.trajectory.joint_names) == SPEC.joint_names
        assert [c.sequence for c in h.chunks] == list(range(len(h.chunks)))
        assert chunk.inference_latency_ms > 0 and abs(chunk.control_period.nanosec - 100_000_000) == 0
        assert any(s.state == PolicyStatus.STATE_RUNNING for s in h.statuses)
    finally:
        h.close()


def test_stale_or_bad_observations_hold_the_robot_and_the_node_keeps_running(ros_context, spin, tiny_checkpoint):
    h = Harness(ros_context, tiny_checkpoint, max_observation_age_s=0.2)
    try:
        old = h.robot.get_clock().now().nanoseconds - 5_000_000_000
        assert spin(h.executor, lambda: h.publish(stamp_ns=old) or any(
            s.state == PolicyStatus.STATE_HOLDING or "stale" in s.message for s in h.statuses
        ), timeout_s=20.0)
        assert h.trajectories == []
        assert spin(h.executor, lambda: h.publish(encoding="yuv422") or any(
            "unsupported image encoding" in s.message for s in h.statuses
        ), timeout_s=20.0), [s.message for s in h.statuses]
        assert h.trajectories == []
        # fresh, valid input again: chunks flow
        assert spin(h.executor, lambda: h.publish() or len(h.trajectories) > 0, timeout_s=20.0)
    finally:
        h.close()


def test_bad_parameters_are_one_clear_error(ros_context, tiny_checkpoint):
    # rclpy enforces the declared range (run_node prints this as one line, exit code 2)
    with pytest.raises(InvalidParameterValueException, match="replan_steps out of range. Min: 1"):
        PolicyNode(context=ros_context, parameter_overrides=[Parameter("replan_steps", value=0)])
    h = Harness(ros_context, tiny_checkpoint, replan_steps=10)  # as long as the tiny model's chunk
    try:
        assert h.policy.policy is None and h.policy._state == PolicyStatus.STATE_ERROR
        assert "its chunks have 10 steps, replan_steps is 10" in h.policy._message
    finally:
        h.close()


def test_checkpoint_parameter_is_validated_before_it_is_accepted(ros_context, tiny_checkpoint, tmp_path):
    h = Harness(ros_context, tiny_checkpoint)
    try:
        result = h.policy.set_parameters([Parameter("checkpoint", value=str(tmp_path))])[0]
        assert not result.successful and "no config.json" in result.reason
        assert h.policy.set_parameters([Parameter("checkpoint", value=str(tiny_checkpoint))])[0].successful
    finally:
        h.close()


def test_the_checkpoint_parameter_swaps_the_framework_live(ros_context, spin, tiny_checkpoint,
                                                          tiny_octo_checkpoint):
    h = Harness(ros_context, tiny_checkpoint)
    try:
        assert spin(h.executor, lambda: h.publish() or len(h.chunks) >= 2, timeout_s=30.0)
        assert h.chunks[-1].framework == "act"
        swap = Parameter("checkpoint", value=str(tiny_octo_checkpoint))
        assert h.policy.set_parameters([swap])[0].successful
        assert spin(h.executor, lambda: h.publish() or h.chunks[-1].framework == "octo", timeout_s=30.0)
        sequences = [c.sequence for c in h.chunks]
        assert sequences == list(range(len(sequences)))  # one stream across the swap, nothing lost
        frameworks = [c.framework for c in h.chunks]
        assert frameworks == sorted(frameworks)  # act until the swap, octo after: one switch
        assert len(h.trajectories[-1].points) <= 6  # the new model's chunk
    finally:
        h.close()


def test_framework_chooses_from_the_models_directory_and_an_unknown_one_is_refused(
        ros_context, spin, tiny_checkpoint, tiny_octo_checkpoint, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "one").symlink_to(tiny_checkpoint)
    (models / "two").symlink_to(tiny_octo_checkpoint)
    (models / "notes").mkdir()  # not a checkpoint: ignored
    h = Harness(ros_context, tiny_checkpoint, models=str(models))
    try:
        refused = h.policy.set_parameters([Parameter("framework", value="pi0")])[0]
        assert not refused.successful
        assert "no so100 checkpoint of it in models" in refused.reason and "found: act, octo" in refused.reason
        assert h.policy.set_parameters([Parameter("framework", value="octo")])[0].successful
        assert spin(h.executor, lambda: h.publish() or (h.chunks and h.chunks[-1].framework == "octo"),
                    timeout_s=30.0)
    finally:
        h.close()


def test_a_checkpoint_for_another_rate_is_refused_and_the_old_model_keeps_running(
        ros_context, spin, tiny_checkpoint, tmp_path):
    import json
    import shutil

    other = tmp_path / "fast"
    shutil.copytree(tiny_checkpoint, other)
    config = json.loads((other / "config.json").read_text())
    config["rate_hz"] = 30.0
    (other / "config.json").write_text(json.dumps(config))
    h = Harness(ros_context, tiny_checkpoint)
    try:
        refused = h.policy.set_parameters([Parameter("checkpoint", value=str(other))])[0]
        assert not refused.successful and "runs at 30.0 Hz, the so100 is controlled at 10.0 Hz" in refused.reason
        assert spin(h.executor, lambda: h.publish() or len(h.chunks) >= 2, timeout_s=30.0)
    finally:
        h.close()


def test_between_inferences_a_history_window_model_gets_every_control_step(ros_context, spin,
                                                                          tiny_octo_checkpoint):
    """Octo with history_window 2, replanning every 2 steps: one observe() per tick without inference."""
    h = Harness(ros_context, tiny_octo_checkpoint, replan_steps=2)
    calls = []
    policy = h.policy.policy
    observe, infer = policy.observe, policy.infer
    times = []
    policy.observe = lambda obs: calls.append("observe") or observe(obs)
    policy.infer = lambda obs, **kw: calls.append("infer") or times.append(obs["time_s"]) or infer(obs, **kw)
    try:
        assert spin(h.executor, lambda: h.publish() or (calls.count("infer") >= 4 and len(h.trajectories) >= 3),
                    timeout_s=30.0), calls
        first = calls.index("infer")
        assert calls[first:first + 7] == ["infer", "observe"] * 3 + ["infer"]
        # each observation carries its stamp (Helix measures its rates on it): 0.2 s apart here
        assert abs(times[-1] - h.robot.get_clock().now().nanoseconds * 1e-9) < 2.0
        assert 0.1 < np.median(np.diff(times)) < 0.4
    finally:
        h.close()


@pytest.mark.parametrize("mode", ["temporal_ensemble", "rtc"])
def test_the_execution_mode_changes_live_and_a_bad_one_is_refused(ros_context, spin, tiny_checkpoint, mode):
    h = Harness(ros_context, tiny_checkpoint)
    try:
        refused = h.policy.set_parameters([Parameter("execution", value="blend")])[0]
        assert not refused.successful and "expected one of receding, temporal_ensemble, rtc" in refused.reason
        assert h.policy.set_parameters([Parameter("execution", value=mode)])[0].successful
        assert spin(h.executor, lambda: h.publish() or len(h.trajectories) >= 3, timeout_s=30.0)
        assert h.policy._executor.mode == mode
        assert len(h.policy._executor.chunks) >= 1
    finally:
        h.close()


def test_the_e_stop_latches_from_the_topic_holds_and_only_the_release_service_unlatches(
        ros_context, spin, tiny_checkpoint):
    from std_msgs.msg import Bool
    from std_srvs.srv import Trigger

    h = Harness(ros_context, tiny_checkpoint, ramp_in_s=0.3)
    estop = h.robot.create_publisher(Bool, "/policy/estop", 10)
    release = h.robot.create_client(Trigger, "/policy/release")
    try:
        assert spin(h.executor, lambda: h.publish() or len(h.trajectories) >= 2, timeout_s=30.0)
        assert spin(h.executor, lambda: estop.publish(Bool(data=True)) or h.policy.safety.estopped,
                    timeout_s=10.0)
        assert spin(h.executor, lambda: len(h.trajectories[-1].points) == 1, timeout_s=5.0)
        spin(h.executor, lambda: False, timeout_s=1.0)  # anything still in flight arrives
        hold = h.trajectories[-1]
        assert len(hold.points) == 1 and not any(hold.points[0].velocities)  # one point, at rest
        count = len(h.trajectories)
        estop.publish(Bool(data=False))  # false does not release
        spin(h.executor, lambda: h.publish() and False, timeout_s=2.0)
        assert len(h.trajectories) == count and h.policy.safety.estopped
        assert h.policy._state == PolicyStatus.STATE_HOLDING and "e-stop latched" in h.policy._message

        future = release.call_async(Trigger.Request())
        assert spin(h.executor, future.done, timeout_s=10.0) and future.result().success
        assert spin(h.executor, lambda: h.publish() or len(h.trajectories) > count, timeout_s=30.0)
        again = release.call_async(Trigger.Request())
        assert spin(h.executor, again.done, timeout_s=10.0)
        assert not again.result().success and "not latched" in again.result().message
    finally:
        h.close()


def test_dry_run_publishes_chunks_but_commands_nothing(ros_context, spin, tiny_checkpoint):
    h = Harness(ros_context, tiny_checkpoint, dry_run=True)
    try:
        assert spin(h.executor, lambda: h.publish() or len(h.chunks) >= 3, timeout_s=30.0)
        assert h.trajectories == [] and "dry run" in h.policy._message
        assert h.policy.set_parameters([Parameter("dry_run", value=False)])[0].successful
        assert spin(h.executor, lambda: h.publish() or len(h.trajectories) >= 1, timeout_s=30.0)
    finally:
        h.close()


def test_a_chunk_far_from_the_measured_joints_is_refused_and_the_arm_holds(ros_context, spin,
                                                                           tiny_checkpoint):
    h = Harness(ros_context, tiny_checkpoint, max_step=0.01)  # the tiny model's chunk is further
    try:
        assert spin(h.executor, lambda: h.publish() or "refused chunk" in h.policy._message,
                    timeout_s=30.0)
        assert "max_step 0.01 rad" in h.policy._message and h.trajectories == []
        assert h.policy._state == PolicyStatus.STATE_HOLDING
    finally:
        h.close()


def test_diagnostics_report_the_policy_and_every_input(ros_context, spin, tiny_checkpoint):
    from diagnostic_msgs.msg import DiagnosticArray

    h = Harness(ros_context, tiny_checkpoint)
    arrays = []
    h.robot.create_subscription(DiagnosticArray, "/diagnostics", arrays.append, 10)
    try:
        def statuses():
            return {s.name: s for s in arrays[-1].status} if arrays else {}

        def running_with_rates():
            h.publish()
            front = statuses().get("/policy: input front")
            return (statuses().get("/policy: policy") is not None
                    and statuses()["/policy: policy"].level == b"\x00"
                    and front is not None and front.message.endswith("Hz") and front.message != "0.0 Hz")
        assert spin(h.executor, running_with_rates, timeout_s=30.0)
        statuses = statuses()
        assert set(statuses) == {"/policy: policy", "/policy: input state", "/policy: input front"}
        values = {v.key: v.value for v in statuses["/policy: policy"].values}
        assert values["framework"] == "act" and float(values["inference p50 ms"]) > 0
        front = {v.key: v.value for v in statuses["/policy: input front"].values}
        assert 10.0 < float(front["rate Hz"]) < 40.0  # the harness sends at about 30 Hz
    finally:
        h.close()


def test_chunk_markers_trace_the_end_effector_where_mujoco_puts_it(ros_context, spin, tiny_checkpoint):
    """The LINE_STRIP of the chunk against MuJoCo's kinematics of the same joint positions (the
    URDF and the scene agree within 1 mm, test_so100_description)."""
    import mujoco
    import xacro
    from std_msgs.msg import String
    from visualization_msgs.msg import MarkerArray

    from librobot_drivers.resources import share_path
    from librobot_drivers.ros_common import LATCHED
    from librobot_drivers.sim.so100_sim import SCENE_PATH

    h = Harness(ros_context, tiny_checkpoint)
    description = h.robot.create_publisher(String, "/robot_description", LATCHED)
    urdf = xacro.process_file(str(share_path("description", "urdf", "so100.urdf.xacro"))).toxml()
    description.publish(String(data=urdf))
    arrays = []
    h.robot.create_subscription(MarkerArray, "/policy/markers", arrays.append, 10)
    try:
        assert spin(h.executor, lambda: h.publish() or len(arrays) >= 2, timeout_s=30.0)
        scene = mujoco.MjModel.from_xml_path(str(SCENE_PATH))
        data = mujoco.MjData(scene)
        checked = 0
        for array, chunk in zip(arrays, h.chunks):  # one marker array after each chunk
            current = next(m for m in array.markers if m.ns == "chunk/tcp_link" and m.id == 0)
            assert current.type == Marker.LINE_STRIP and current.header.frame_id == "world"
            trajectory = chunk.trajectory
            assert len(current.points) == len(trajectory.points)
            for point, marker_point in zip(trajectory.points, current.points):
                for name, angle in zip(trajectory.joint_names, point.positions):
                    data.qpos[scene.joint(name).qposadr[0]] = angle
                mujoco.mj_kinematics(scene, data)
                np.testing.assert_allclose([marker_point.x, marker_point.y, marker_point.z],
                                           data.site("tcp").xpos, atol=1e-3)
            checked += 1
        assert checked >= 1
        assert any(m.ns == "chunk/tcp_link" and m.id == 1 for m in arrays[-1].markers)  # the previous chunk
        assert any(m.type == Marker.TEXT_VIEW_FACING and "act" in m.text for m in arrays[-1].markers)
    finally:
        h.close()


def test_markers_scale_with_the_robot_and_the_status_stands_above_it():
    """An arm's 4 mm lines would vanish on a 7 m wheel loader: sizes follow the robot's reach."""
    from builtin_interfaces.msg import Time

    arm_path = np.array([[0.3, 0.0, 0.2], [0.32, 0.01, 0.18]])
    arm = chunk_markers("world", Time(), {"tcp_link": arm_path}, None, "act", reach=0.3)
    loader_path = np.array([[6.8, 0.0, 1.8], [6.5, 0.3, 4.5]])
    loader = chunk_markers("base_link", Time(), {"bucket_tip_link": loader_path},
                           {"bucket_tip_link": loader_path[::-1]}, "act", reach=7.0)
    assert [m.ns for m in loader.markers] == ["chunk/bucket_tip_link"] * 2 + ["status"]
    line = lambda array: next(m for m in array.markers if m.type == Marker.LINE_STRIP).scale.x
    text = lambda array: next(m for m in array.markers if m.type == Marker.TEXT_VIEW_FACING)
    assert line(arm) == pytest.approx(0.004) and text(arm).scale.z == pytest.approx(0.025)
    assert line(loader) / line(arm) == pytest.approx(7.0 / 0.3)
    assert text(loader).pose.position.z > loader_path[:, 2].max()  # above the raised bucket


def test_lifecycle_configure_loads_activate_commands_deactivate_holds(ros_context, spin, tiny_checkpoint):
    from rclpy.lifecycle import TransitionCallbackReturn as Result

    h = Harness(ros_context, tiny_checkpoint, autostart=False)
    try:
        assert h.policy.policy is None  # unconfigured: nothing loaded
        assert h.policy.trigger_configure() == Result.SUCCESS and h.policy.policy is not None
        spin(h.executor, lambda: h.publish() and False, timeout_s=1.5)
        assert h.trajectories == [] and h.chunks == []  # configured but inactive: nothing moves
        assert h.policy.trigger_activate() == Result.SUCCESS
        assert spin(h.executor, lambda: h.publish() or len(h.trajectories) >= 2, timeout_s=30.0)
        assert h.policy.trigger_deactivate() == Result.SUCCESS
        assert spin(h.executor, lambda: len(h.trajectories[-1].points) == 1, timeout_s=5.0)  # the hold
        count = len(h.trajectories)
        spin(h.executor, lambda: h.publish() and False, timeout_s=1.5)
        assert len(h.trajectories) == count and h.policy._state == PolicyStatus.STATE_HOLDING
        assert h.policy.trigger_cleanup() == Result.SUCCESS and h.policy.policy is None
    finally:
        h.close()


@pytest.mark.parametrize("trigger", ["frame", "timer"])
def test_a_frame_triggered_inference_runs_on_the_frame_as_it_arrives(ros_context, spin, tiny_checkpoint, trigger):
    """A 30 Hz camera: a frame-triggered inference starts as a frame arrives, so the frame is as
    old as its transport when the model runs; on the timer the newest frame is anything up to a
    camera period old (benchmarks/bench_node.py measures both over DDS)."""
    h = Harness(ros_context, tiny_checkpoint, replan_steps=2, inference_trigger=trigger)
    try:
        def feed():
            h.publish()
            return len(h.chunks) >= 14
        assert spin(h.executor, feed, timeout_s=40.0), [s.message for s in h.statuses]
        waits = [c.observation_age_ms - c.inference_latency_ms for c in h.chunks[4:]]
        if trigger == "frame":  # measured here: 2-5 ms; on the timer 30-45 ms
            assert np.median(waits) < 12.0, waits
    finally:
        h.close()


def test_an_unknown_inference_trigger_is_refused(ros_context, tiny_checkpoint):
    h = Harness(ros_context, tiny_checkpoint)
    try:
        result = h.policy.set_parameters([Parameter("inference_trigger", value="sometimes")])[0]
        assert not result.successful and "expected one of frame, timer" in result.reason
        assert h.policy.inference_trigger == "frame"
    finally:
        h.close()


def test_a_robot_of_several_controllers_gets_one_trajectory_per_commanded_group(
        ros_context, spin, tiny_humanoid_checkpoint):
    """The humanoid: the node reads all 31 joints, feeds the policy the 19 commanded ones and
    publishes each chunk as one JointTrajectory per commanded group's controller, with that
    group's joints, all stamped alike; the held legs' controller gets nothing. RViz gets both
    hands' paths, where the MuJoCo twin puts the hands for the chunk's joint positions."""
    import mujoco
    from std_msgs.msg import String
    from visualization_msgs.msg import MarkerArray

    from librobot_drivers.ros_common import LATCHED
    from librobot_drivers.sim.humanoid_sim import HumanoidSim, robot_description

    spec = load_embodiment("humanoid")
    policy = PolicyNode(context=ros_context, parameter_overrides=[
        Parameter("embodiment", value="humanoid"), Parameter("checkpoint", value=str(tiny_humanoid_checkpoint)),
        Parameter("replan_steps", value=1), Parameter("max_step", value=10.0)])
    robot = Node("fake_humanoid", context=ros_context)
    joints = robot.create_publisher(JointState, "/joint_states", 10)
    camera = robot.create_publisher(Image, "/camera/head/image_raw", 10)
    received = {g.name: [] for g in spec.groups}
    for group in spec.groups:
        robot.create_subscription(JointTrajectory, group.command_topic, received[group.name].append, 10)
    chunks, markers = [], []
    robot.create_subscription(ActionChunk, "/policy/action_chunk", chunks.append, 10)
    robot.create_subscription(MarkerArray, "/policy/markers", markers.append, 10)
    robot.create_publisher(String, "/robot_description", LATCHED).publish(String(data=robot_description()))
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(policy)
    executor.add_node(robot)
    last = [-1.0]

    def feed():
        if time.monotonic() - last[0] >= CAMERA_PERIOD_S:
            last[0] = time.monotonic()
            stamp = messages.time_from_ns(robot.get_clock().now().nanoseconds)
            state = JointState(name=spec.joint_names, position=[0.0] * spec.dof)
            state.header.stamp = stamp
            joints.publish(state)
            camera.publish(messages.image_msg(np.full((120, 160, 3), 90, np.uint8), stamp, "head_camera"))
        return (len(chunks) >= 2 and all(len(received[g.name]) >= 2 for g in spec.commanded_groups)
                and len(markers) >= 2)

    try:
        assert spin(executor, feed, timeout_s=30.0), policy._message
        assert received["legs"] == []
        chunk = chunks[-1]
        assert len(chunk.trajectory.joint_names) == 19
        for group in spec.commanded_groups:
            trajectory = next(t for t in reversed(received[group.name]) if t.header.stamp == chunk.trajectory.header.stamp)
            assert list(trajectory.joint_names) == list(group.joints)
            columns = [list(chunk.trajectory.joint_names).index(n) for n in group.joints]
            whole = np.array([p.positions for p in chunk.trajectory.points])[:, columns]
            assert np.allclose([p.positions for p in trajectory.points], whole)
            assert [p.time_from_start for p in trajectory.points] == [p.time_from_start for p in chunk.trajectory.points]

        # one marker array after each chunk: the newest one draws one of the chunks received
        array = markers[-1]
        paths = {m.ns: m for m in array.markers if m.ns.startswith("chunk/") and m.id == 0}
        assert set(paths) == {"chunk/left_tcp_link", "chunk/right_tcp_link"}
        twin = HumanoidSim(spec, render_cameras=())
        model, data = twin.model, mujoco.MjData(twin.model)
        matched = 0
        for chunk in chunks:
            trajectory = chunk.trajectory
            if len(trajectory.points) != len(paths["chunk/left_tcp_link"].points):
                continue
            expected = {side: [] for side in ("left", "right")}
            for point in trajectory.points:
                for name, angle in zip(trajectory.joint_names, point.positions):
                    data.qpos[model.joint(name).qposadr[0]] = angle
                mujoco.mj_kinematics(model, data)
                for side in expected:
                    expected[side].append(data.body(f"{side}_tcp_link").xpos.copy())
            if all(np.allclose([[p.x, p.y, p.z] for p in paths[f"chunk/{side}_tcp_link"].points],
                               expected[side], atol=1e-5) for side in expected):
                matched += 1
        assert matched >= 1, "no chunk's hands where the markers draw them"
        assert paths["chunk/left_tcp_link"].header.frame_id == "world"
        mujoco.mj_kinematics(model, home := mujoco.MjData(model))  # every joint at zero
        reach = np.linalg.norm(home.body("left_tcp_link").xpos)  # about 0.95 m: the hands from the floor
        assert paths["chunk/left_tcp_link"].scale.x == pytest.approx(LINE_WIDTH * reach, rel=1e-6)
    finally:
        executor.shutdown()
        policy.destroy_node()
        robot.destroy_node()


class _LoaderGraph:
    """A wheel loader policy node and the real drive node, fed by a fake machine (joint states
    with the wheels rolling at 1.2 m/s, the cab camera) at the camera's rate."""

    def __init__(self, ros_context, checkpoint, replan_steps: int, camera_period_s: float = CAMERA_PERIOD_S):
        from std_msgs.msg import Float64MultiArray

        from librobot_drivers.drive_node import DriveNode

        self.spec = spec = load_embodiment("wheel_loader")
        self.policy = PolicyNode(context=ros_context, parameter_overrides=[
            Parameter("embodiment", value="wheel_loader"), Parameter("checkpoint", value=str(checkpoint)),
            Parameter("replan_steps", value=replan_steps), Parameter("max_step", value=10.0)])
        self.drive_node = DriveNode(context=ros_context)
        self.robot = robot = Node("fake_loader", context=ros_context)
        self._joints = robot.create_publisher(JointState, "/joint_states", 10)
        self._camera = robot.create_publisher(Image, "/camera/cab/image_raw", 10)
        self.implements, self.wheel_plans, self.wheels, self.chunks = [], [], [], []
        robot.create_subscription(JointTrajectory, "/hydraulics_controller/joint_trajectory",
                                  self.implements.append, 10)
        robot.create_subscription(JointTrajectory, spec.drive.trajectory_topic,
                                  lambda m: self.wheel_plans.append((time.monotonic(), m)), 10)
        robot.create_subscription(Float64MultiArray, "/wheels_controller/commands",
                                  lambda m: self.wheels.append((time.monotonic(), np.array(m.data))), 100)
        robot.create_subscription(ActionChunk, "/policy/action_chunk", self.chunks.append, 10)
        self.executor = SingleThreadedExecutor(context=ros_context)
        for node in (self.policy, self.drive_node, robot):
            self.executor.add_node(node)
        self._last = -1.0
        self.camera_on = True
        self.camera_period_s = camera_period_s

    def feed(self) -> None:
        if time.monotonic() - self._last < self.camera_period_s:
            return
        self._last = time.monotonic()
        rolling = 1.2 / self.spec.drive.geometry.wheel_radius  # rad/s: the wheels measure 1.2 m/s
        stamp = messages.time_from_ns(self.robot.get_clock().now().nanoseconds)
        state = JointState(name=self.spec.joint_names, position=[0.1, 0, 0, 0, 0, -0.2, 0.3],
                           velocity=[0.0, rolling, rolling, rolling, rolling, 0.0, 0.0])
        state.header.stamp = stamp
        self._joints.publish(state)
        if self.camera_on:
            self._camera.publish(messages.image_msg(np.full((120, 160, 3), 90, np.uint8), stamp, "cab_camera"))

    def driving(self) -> bool:
        self.feed()
        return len(self.chunks) >= 3 and any(w.any() for _, w in self.wheels)

    def close(self) -> None:
        self.executor.shutdown()
        for node in (self.policy, self.drive_node, self.robot):
            node.destroy_node()


def test_a_vehicle_gets_implement_trajectories_and_wheel_speeds_and_a_stalled_policy_stops_it(
        ros_context, spin, tiny_wheel_loader_checkpoint):
    """The wheel loader: the policy's state holds the ground speed measured by the wheels; each
    chunk goes to the hydraulics' trajectory controller (positions) and, as wheel speeds, to the
    drive node, which drives the wheels' velocity controller. A policy that stalls mid-drive
    sends nothing more: the drive node's deadman stops the wheels and holds the implements."""
    from librobot_drivers.articulated import ground_speed

    graph = _LoaderGraph(ros_context, tiny_wheel_loader_checkpoint, replan_steps=1)
    spec, policy, executor = graph.spec, graph.policy, graph.executor
    view, drive = spec.commanded(), spec.drive
    implements, wheels, chunks = graph.implements, graph.wheels, graph.chunks
    feed, driving = graph.feed, graph.driving

    try:
        assert spin(executor, driving, timeout_s=30.0), policy._message
        chunk = chunks[-1]
        assert list(chunk.trajectory.joint_names) == view.joint_names
        planned = np.array([p.positions for p in chunk.trajectory.points])
        implement = next(t for t in reversed(implements) if t.header.stamp == chunk.trajectory.header.stamp)
        assert list(implement.joint_names) == ["articulation_joint", "boom_joint", "bucket_joint"]
        assert np.allclose([p.positions for p in implement.points], planned[:, [0, 2, 3]])
        plan = next(m for _, m in reversed(graph.wheel_plans) if m.header.stamp == chunk.trajectory.header.stamp)
        assert list(plan.joint_names) == list(drive.wheels)
        speeds = ground_speed(drive.geometry, np.array([p.velocities for p in plan.points]))
        assert np.allclose(speeds, planned[:, 1])
        assert np.all(np.abs(planned[:, 1]) <= drive.speed.upper + 1e-9)  # the safety layer's limit
        # the first planned speed starts from the measured 1.2 m/s (within the acceleration limit)
        assert abs(planned[0, 1] - 1.2) <= drive.speed.velocity * 0.1 * 1.5 + 1e-6

        def hang(*args, **kwargs):
            time.sleep(3.0)  # inference that never comes back in time
            raise ValueError("stalled")
        policy.policy.infer = hang
        stalled_at = time.monotonic()
        implements.clear()
        spin(executor, lambda: (feed(), False)[1], timeout_s=1.5)
        late = [w for t, w in wheels if t > stalled_at + 0.1 + drive.command_timeout_s + 0.1]
        assert late and all(not w.any() for w in late), late[:3]
        assert implements, "the implements were not held"
    finally:
        graph.close()


@pytest.mark.parametrize("camera_period_s", [CAMERA_PERIOD_S, 0.19])
def test_between_chunks_a_vehicle_gets_its_wheel_trajectory_every_period_while_the_inputs_are_fresh(
        ros_context, spin, tiny_wheel_loader_checkpoint, camera_period_s):
    """Planning every 4 periods (0.4 s) outlasts the drive node's deadman (0.25 s): the node
    sends the wheel trajectory being driven again every period in between, and the wheels keep
    turning; also while an inference waits for the next camera frame (with frames 0.19 s apart,
    about 0.17 s after each inference tick: a period's tick plus that wait outlasts the deadman).
    When the camera goes silent the renewals stop (a hold) and the wheels stop."""
    graph = _LoaderGraph(ros_context, tiny_wheel_loader_checkpoint, replan_steps=4, camera_period_s=camera_period_s)
    drive = graph.spec.drive
    try:
        assert spin(graph.executor, graph.driving, timeout_s=30.0), graph.policy._message
        since = time.monotonic()
        spin(graph.executor, lambda: (graph.feed(), False)[1], timeout_s=2.0)
        plans = [(t, m) for t, m in graph.wheel_plans if t > since]
        chunk_stamps = {(c.trajectory.header.stamp.sec, c.trajectory.header.stamp.nanosec) for c in graph.chunks}
        renewed = [m for _, m in plans if (m.header.stamp.sec, m.header.stamp.nanosec) in chunk_stamps]
        assert len(plans) >= 15, len(plans)  # about one a period (10 Hz) ...
        assert len({(m.header.stamp.sec, m.header.stamp.nanosec) for m in renewed}) <= 7  # ... of about 5 chunks
        assert max(np.diff([t for t, _ in plans])) < drive.command_timeout_s, "a gap the deadman saw"
        driven = [w for t, w in graph.wheels if t > since + 0.1]
        assert driven and all(w.any() for w in driven), "the deadman stopped the wheels between chunks"

        graph.camera_on = False  # the camera goes silent: stale inputs
        silent = time.monotonic()
        spin(graph.executor, lambda: (graph.feed(), False)[1], timeout_s=1.5)
        stale_after = silent + graph.policy.max_age_s + 0.15
        assert not [m for t, m in graph.wheel_plans if t > stale_after and any(
            any(p.velocities) for p in m.points)], "wheel trajectories went on with stale inputs"
        late = [w for t, w in graph.wheels if t > stale_after + drive.command_timeout_s]
        assert late and all(not w.any() for w in late), late[:3]
    finally:
        graph.close()
