"""camera_ingestion, the policy node and the scheduler in one process (ROS 2 composition).

The three nodes keep their names, parameters, topics and /diagnostics (``ros2 node list`` shows
them all; ``ros2 param set /camera_ingestion instruction ...`` works as before) and spin on one
executor. What changes is the way from observation to chunk: camera_ingestion hands each
observation to the policy node by a call (:meth:`PolicyNode.hand_over`, the same checks as the
subscription) before it publishes it for the others, and the policy hands each chunk to the
scheduler (:meth:`SchedulerNode.take_chunk`) before it publishes it. Each takes one DDS hop between
Python processes (serialising the message, waking the other process, turning it back into Python
objects: ~1-1.8 ms median each on the 2-core development VM, docs/ros.md) off that path. The
published copies still go out (the recorder, the dashboard, the correction node read them), and the
two nodes skip the copies of what they were handed; anything else on those topics (another
publisher, a rogue message) is taken and checked as before. Launched by the graph when the launch
argument ``compose`` is true (the default); ``compose:=false`` runs one process per node (e.g. the
ingestion on the robot's computer, the policy on a GPU machine).

The model runs on the policy node's worker thread, so the other callbacks (executor thread) go on
while it infers; they share the interpreter's lock, which the model's torch operations release.
The correction node's 100 Hz command loop stays in its own process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from async_vla_ros.nodes.camera_ingestion import CameraIngestionNode
from async_vla_ros.nodes.common import build_node, run_node
from async_vla_ros.nodes.policy_node import PolicyNode
from async_vla_ros.nodes.scheduler_node import SchedulerNode

NODE_NAMES = (CameraIngestionNode.NODE_NAME, PolicyNode.NODE_NAME, SchedulerNode.NODE_NAME)


class PolicyContainer:
    """The three nodes, built and wired; :func:`~async_vla_ros.nodes.common.run_node` spins ``nodes``."""

    NODE_NAME = "policy_container"

    def __init__(self, *, node_overrides: Mapping[str, Sequence[Any]] | None = None, **kwargs) -> None:
        """``node_overrides``: node name -> its ``parameter_overrides`` (in-process tests; a launched
        container reads each node's section of the params file)."""
        self.nodes: tuple = ()
        over = dict(node_overrides or {})
        unknown = set(over) - set(NODE_NAMES)
        if unknown:
            raise ValueError(f"node_overrides for {sorted(unknown)}: this container runs {', '.join(NODE_NAMES)}")

        def node_kwargs(name: str) -> dict:
            return {**kwargs, "parameter_overrides": list(over[name])} if name in over else dict(kwargs)

        ingestion = build_node(CameraIngestionNode, **node_kwargs(CameraIngestionNode.NODE_NAME))
        self.nodes = (ingestion,)
        policy = build_node(PolicyNode, **node_kwargs(PolicyNode.NODE_NAME))  # loads the model (seconds)
        self.nodes = (ingestion, policy)
        scheduler = build_node(SchedulerNode, **node_kwargs(SchedulerNode.NODE_NAME))
        self.nodes = (ingestion, policy, scheduler)
        self.ingestion, self.policy, self.scheduler = ingestion, policy, scheduler
        ingestion.local_sinks.append(policy.hand_over)
        policy.local_chunk_sinks.append(scheduler.take_chunk)

    @property
    def shutdown_requested(self) -> bool:
        return any(getattr(n, "shutdown_requested", False) for n in self.nodes)

    @property
    def exit_code(self) -> int:
        return next((c for c in (getattr(n, "exit_code", 0) for n in self.nodes) if c), 0)

    def close(self) -> None:
        for node in reversed(self.nodes):
            close = getattr(node, "close", None)
            if close is not None:
                close()

    def destroy_node(self) -> None:
        for node in reversed(self.nodes):
            node.destroy_node()
        self.nodes = ()


def main(args=None) -> int:
    return run_node(PolicyContainer, args)


if __name__ == "__main__":
    raise SystemExit(main())
