"""Forward kinematics of a URDF (the robot_description string), vectorised over many joint
configurations. ROS-free; used for the policy node's RViz markers and the description tests.

    fk = UrdfKinematics(robot_description)
    fk.root                                            # the frame positions are in
    fk.link_positions("tcp_link", joint_names, q)      # (N, 3) for q (N, D)
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np


def rotation_about(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices (N, 3, 3) about a unit axis (3,) by angles (N,) (Rodrigues)."""
    x, y, z = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    angle = np.asarray(angle, dtype=np.float64)[:, None, None]
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF's fixed-axis roll, pitch, yaw -> (3, 3)."""
    one = np.zeros(1)
    return (rotation_about(np.array([0.0, 0.0, 1.0]), one + yaw)[0]
            @ rotation_about(np.array([0.0, 1.0, 0.0]), one + pitch)[0]
            @ rotation_about(np.array([1.0, 0.0, 0.0]), one + roll)[0])


def _floats(text: str | None, default: str) -> np.ndarray:
    return np.array([float(v) for v in (text or default).split()])


@dataclass(frozen=True)
class _Joint:
    name: str
    kind: str  # revolute, continuous, prismatic, fixed
    parent: str
    xyz: np.ndarray
    rotation: np.ndarray  # of the origin's rpy
    axis: np.ndarray


class UrdfKinematics:
    def __init__(self, robot_description: str):
        try:
            urdf = ET.fromstring(robot_description)
        except ET.ParseError as err:
            raise ValueError(f"robot_description is not XML: {err}") from None
        self._by_child: dict[str, _Joint] = {}
        for joint in urdf.findall("joint"):
            origin = joint.find("origin")
            axis = joint.find("axis")
            self._by_child[joint.find("child").get("link")] = _Joint(
                name=joint.get("name"), kind=joint.get("type"), parent=joint.find("parent").get("link"),
                xyz=_floats(origin.get("xyz") if origin is not None else None, "0 0 0"),
                rotation=rpy_matrix(*_floats(origin.get("rpy") if origin is not None else None, "0 0 0")),
                axis=_floats(axis.get("xyz") if axis is not None else None, "1 0 0"),
            )
        self.links = [link.get("name") for link in urdf.findall("link")]
        roots = [link for link in self.links if link not in self._by_child]
        if len(roots) != 1:
            raise ValueError(f"robot_description has {len(roots)} root links {roots}: expected one")
        self.root = roots[0]

    def chain(self, link: str) -> list[_Joint]:
        """The joints from the root to `link`, root first."""
        if link not in self.links:
            raise ValueError(f"link {link!r} is not in the robot_description (links: {self.links})")
        joints = []
        while link in self._by_child:
            joints.append(self._by_child[link])
            link = joints[-1].parent
        return joints[::-1]

    def link_poses(self, link: str, joint_names: list[str], q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (N, 3) and rotations (N, 3, 3) of `link` in the root frame for joint
        positions q (N, D) in `joint_names` order (joints of the chain not named there stay 0)."""
        q = np.atleast_2d(np.asarray(q, dtype=np.float64))
        index = {name: i for i, name in enumerate(joint_names)}
        position = np.zeros((len(q), 3))
        rotation = np.repeat(np.eye(3)[None], len(q), axis=0)
        for joint in self.chain(link):
            position = position + rotation @ joint.xyz
            rotation = rotation @ joint.rotation
            value = q[:, index[joint.name]] if joint.name in index else np.zeros(len(q))
            if joint.kind in ("revolute", "continuous"):
                rotation = rotation @ rotation_about(joint.axis, value)
            elif joint.kind == "prismatic":
                position = position + (rotation @ joint.axis) * value[:, None]
        return position, rotation

    def link_positions(self, link: str, joint_names: list[str], q: np.ndarray) -> np.ndarray:
        return self.link_poses(link, joint_names, q)[0]
