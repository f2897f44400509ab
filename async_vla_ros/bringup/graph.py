"""The node graph as data: config/*.yaml + launch arguments -> the nodes to start.

One function, :func:`build_graph`, turns a graph name and launch arguments (``sim:=mujoco
method:=rtc ...``) into :class:`NodeLaunch` records (node name, module, console script,
parameters, remappings, namespace). The built-in launcher (``async-vla-ros launch``) starts
them as ``python -m MODULE --ros-args ...`` processes; ``launch/franka.launch.py`` turns the
same records into ``launch_ros.actions.Node`` actions. Neither adds anything of its own, so the
two cannot drift.

Files (``config/``): ``graph.yaml`` (nodes per graph, conditions), ``params.yaml`` (node
parameters keyed by node name, ROS params-file format), ``methods.yaml`` (method presets),
``franka_bridge.yaml`` (parameter overrides for franka_ros2 hardware / Gazebo).
"""

from __future__ import annotations

import copy
import difflib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from async_vla_ros import names as N
from async_vla_ros.config import PACKAGE, ConfigError, config_dir, load_config
from async_vla_ros.presets import PresetError, get_preset

__all__ = [
    "LaunchArg",
    "LAUNCH_ARGS",
    "NodeLaunch",
    "Graph",
    "GraphError",
    "config_dir",
    "load_config",
    "parse_launch_args",
    "resolve_args",
    "build_graph",
    "resolve_policy",
    "PACKAGE",
]

# one error type for bad launch arguments and bad config files (the message says how to fix it)
GraphError = ConfigError


# ---------------------------------------------------------------------- launch arguments
@dataclass(frozen=True)
class LaunchArg:
    """One launch argument: ``name:=value`` (strings, as ros2 launch passes them)."""

    name: str
    default: str
    description: str
    choices: tuple[str, ...] | None = None
    kind: str = "str"  # str | float | int | bool
    min: float | None = None
    max: float | None = None

    def check(self, value: str) -> Any:
        """Parsed value; GraphError with a clear message when invalid."""
        if self.choices is not None and value not in self.choices:
            close = difflib.get_close_matches(value, list(self.choices), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise GraphError(f"{self.name}:={value}: must be one of {', '.join(self.choices)}{hint}")
        if self.kind == "str":
            return value
        if self.kind == "bool":
            if value.lower() not in ("true", "false"):
                raise GraphError(f"{self.name}:={value}: must be true or false")
            return value.lower() == "true"
        try:
            v = int(value) if self.kind == "int" else float(value)
        except ValueError as exc:
            raise GraphError(
                f"{self.name}:={value}: must be a{'n integer' if self.kind == 'int' else ' number'}"
            ) from exc
        if (self.min is not None and v < self.min) or (self.max is not None and v > self.max) or v != v:
            raise GraphError(f"{self.name}:={value}: must lie in [{self.min}, {self.max}]")
        return v


TASKS = N.TASK_NAMES

LAUNCH_ARGS: tuple[LaunchArg, ...] = (
    LaunchArg(
        "sim", "mujoco", "robot: the MuJoCo sim node, or none (franka_ros2 provides the topics)", ("mujoco", "none")
    ),
    LaunchArg(
        "bridge", "none", "parameter overlay for real robot topics (config/franka_bridge.yaml)", ("none", "franka")
    ),
    LaunchArg("method", "rtc", "method preset (config/methods.yaml)"),
    LaunchArg(
        "policy",
        "default",
        "policy spec: default or state (the task's shipped privileged-state checkpoint for the preset), vla (the "
        "shipped multi-task VLA: cameras + instruction), expert (scripted), a checkpoint path, or NAME:TARGET / "
        "SCHEME://ADDRESS of a registered backend",
    ),
    LaunchArg(
        "a2c2",
        "default",
        "A2C2 head for presets that use one: default (the policy backend's own, e.g. the vla's vla_a2c2.pt, else "
        "the task's shipped <task>_a2c2.pt) or a path",
    ),
    LaunchArg("task", "track", "task (sim scene, expert, default checkpoints)", TASKS),
    LaunchArg(
        "control_hz",
        "20",
        "policy / scheduler control rate (the sim tasks run at 20 Hz)",
        kind="float",
        min=1.0,
        max=1000.0,
    ),
    LaunchArg("command_hz", "100", "correction (command) rate", kind="float", min=10.0, max=1000.0),
    LaunchArg("latency_ms", "0", "latency injected into every chunk (experiments)", kind="float", min=0.0, max=5000.0),
    LaunchArg("namespace", "", "ROS namespace of every node"),
    LaunchArg("episodes", "0", "sim: stop after this many episodes (0: run until stopped)", kind="int", min=0),
    LaunchArg("seed", "0", "sim: seed of the first episode", kind="int", min=0),
    LaunchArg(
        "camera",
        "auto",
        "cameras rendered and ingested: auto (those the policy takes; none for a state policy), true (the "
        "policy's, else the scene camera, e.g. to record it), false (none)",
        ("auto", "true", "false"),
    ),
    LaunchArg(
        "cameras",
        "",
        "camera names, comma-separated (e.g. scene,wrist), for a policy whose backend cannot tell "
        "(remote); must equal the policy's when it can ('' : the policy's)",
    ),
    LaunchArg(
        "camera_size",
        "0",
        "sim: render every camera at this square size in px, like a camera driver's resolution; camera_ingestion "
        "still resizes to the policy's image size (0: render at the policy's size)",
        kind="int",
        min=0,
        max=480,
    ),
    LaunchArg("instruction", "", "language instruction ('' : the task's first paraphrase, names.INSTRUCTIONS)"),
    LaunchArg(
        "command",
        "trajectory",
        "command interface: joint trajectory or forward position controller",
        ("trajectory", "forward"),
    ),
    LaunchArg("fifo", "true", "run the command loop under SCHED_FIFO when permitted", kind="bool"),
    LaunchArg(
        "compose",
        "true",
        "run camera_ingestion and the scheduler in the policy's process (ROS 2 composition): observation and chunk "
        "are handed over without a DDS hop; false: one process per node (e.g. ingestion on the robot's computer)",
        kind="bool",
    ),
    LaunchArg(
        "request_ahead",
        "true",
        "the scheduler sends each chunk request one control step before its observation, so the policy starts "
        "on the observation without waiting for the request; false: the request follows the observation",
        kind="bool",
    ),
    LaunchArg(
        "record",
        "",
        "record a rosbag2 (MCAP) of the graph's topics into this new directory ('' : no "
        "recorder); per-topic counts go beside it in <dir>.counts.json",
    ),
    LaunchArg("dashboard", "false", "serve the live dashboard (http://127.0.0.1:<dashboard_port>/)", kind="bool"),
    LaunchArg("dashboard_port", "8765", "dashboard web server port (loopback only)", kind="int", min=1, max=65535),
)
_ARGS_BY_NAME = {a.name: a for a in LAUNCH_ARGS}


def parse_launch_args(tokens: Sequence[str]) -> dict[str, str]:
    """``["sim:=mujoco", "method:=rtc"]`` -> ``{"sim": "mujoco", ...}`` (names checked)."""
    out: dict[str, str] = {}
    for tok in tokens:
        if ":=" not in tok:
            raise GraphError(f"launch arguments look like name:=value, got {tok!r}")
        name, value = tok.split(":=", 1)
        if name not in _ARGS_BY_NAME:
            close = difflib.get_close_matches(name, list(_ARGS_BY_NAME), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise GraphError(f"unknown launch argument {name!r}{hint}; known: {', '.join(_ARGS_BY_NAME)}")
        out[name] = value
    return out


def resolve_args(given: Mapping[str, str]) -> dict[str, Any]:
    """Defaults filled in, every value validated and parsed."""
    unknown = set(given) - set(_ARGS_BY_NAME)
    if unknown:
        raise GraphError(f"unknown launch arguments {sorted(unknown)}; known: {', '.join(_ARGS_BY_NAME)}")
    return {a.name: a.check(str(given.get(a.name, a.default))) for a in LAUNCH_ARGS}


# ---------------------------------------------------------------------- graph
@dataclass(frozen=True)
class NodeLaunch:
    """Everything needed to start one node, by either launcher."""

    name: str  # ROS node name (also its key in params.yaml)
    module: str  # python -m target
    executable: str  # console script (ros2 run / launch_ros)
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    namespace: str = ""
    # nodes that run in this node's process too (composition, graph.yaml `compose`): the process
    # then runs `module` (a container building every node under its own name), no node-name remap
    hosted: tuple[NodeLaunch, ...] = ()

    @property
    def node_names(self) -> tuple[str, ...]:
        """Every ROS node this process runs."""
        return (self.name, *(h.name for h in self.hosted))

    def remap_arguments(self) -> list[tuple[str, str]]:
        """Remappings of the process: each node's own, node-scoped (``node:from``) in a container."""
        if not self.hosted:
            return list(self.remappings)
        return [(f"{n.name}:{src}", dst) for n in (self, *self.hosted) for src, dst in n.remappings]

    def params_file_content(self) -> dict[str, Any]:
        """The parameters of every node of this process, in ROS params-file form (keyed by node name)."""
        return {n.name: {"ros__parameters": copy.deepcopy(n.parameters)} for n in (self, *self.hosted)}

    def ros_arguments(self, params_file: str | None = None) -> list[str]:
        """``--ros-args`` for a plain process: name, namespace, params file, remaps."""
        args = ["--ros-args"]
        if not self.hosted:  # a container's nodes keep their own names
            args += ["-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        if params_file is not None:
            args += ["--params-file", params_file]
        for src, dst in self.remap_arguments():
            args += ["-r", f"{src}:={dst}"]
        return args

    def command(self, params_file: str | None = None, python: str | None = None) -> list[str]:
        """Full command line of the node process."""
        return [python or sys.executable, "-m", self.module, *self.ros_arguments(params_file)]


@dataclass(frozen=True)
class Graph:
    """The resolved graph: nodes in start order plus the launch arguments used."""

    name: str
    nodes: tuple[NodeLaunch, ...]
    args: dict[str, Any]

    def node(self, name: str) -> NodeLaunch:
        """The node ``name``, also one hosted in another node's process."""
        for n in self.nodes:
            for m in (n, *n.hosted):
                if m.name == name:
                    return m
        raise KeyError(name)

    def process_of(self, name: str) -> NodeLaunch:
        """The process (top-level entry of ``nodes``) that runs node ``name``."""
        for n in self.nodes:
            if name in n.node_names:
                return n
        raise KeyError(name)

    def params_file_content(self) -> dict[str, Any]:
        """All node parameters in ROS params-file form (keyed by node name)."""
        out: dict[str, Any] = {}
        for n in self.nodes:
            out.update(n.params_file_content())
        return out


def _checkpoint(task: str, kind: str) -> str:
    from async_vla_ros.policy.registry import BackendError, checkpoint_file

    try:
        return str(checkpoint_file(task, kind))
    except BackendError as exc:
        raise GraphError(f"{exc} (launch: policy:=expert or policy:=PATH)") from exc


def _when_matches(when: Mapping[str, Any], args: Mapping[str, Any]) -> bool:
    """A node's ``when`` condition: every launch argument equals the value given, or differs from
    it for ``{not: value}`` (e.g. ``record: {not: ""}``: only when a bag directory is given)."""
    for k, v in when.items():
        if k not in args:
            raise GraphError(f"graph.yaml: `when` names an unknown launch argument {k!r}")
        if isinstance(v, Mapping):
            if set(v) != {"not"}:
                raise GraphError(f"graph.yaml: `when: {{{k}: {dict(v)}}}` must be a value or {{not: value}}")
            if str(args[k]) == str(v["not"]):
                return False
        elif str(args[k]) != str(v):
            return False
    return True


def build_graph(name: str = "franka", args: Mapping[str, str] | None = None, directory: Path | None = None) -> Graph:
    """The graph ``name`` for these launch arguments (see module docstring)."""
    a = resolve_args(args or {})
    if a["policy"] == "state":  # the privileged-state baseline: the task's shipped checkpoints
        a["policy"] = "default"
    graphs = load_config("graph.yaml", directory).get("graphs", {})
    if name not in graphs:
        close = difflib.get_close_matches(name, list(graphs), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise GraphError(f"unknown graph {name!r}{hint}; known: {', '.join(graphs)}")
    params = load_config("params.yaml", directory)
    try:
        preset = get_preset(a["method"], directory)
    except PresetError as exc:
        raise GraphError(f"method:={a['method']}: {exc}") from None
    overrides: dict[str, dict[str, Any]] = {}
    if a["bridge"] == "franka":
        overrides = load_config("franka_bridge.yaml", directory).get("overrides", {})
        if a["sim"] == "mujoco":
            raise GraphError("bridge:=franka drives franka_ros2 topics: use it with sim:=none")

    def node_params(node: str) -> dict[str, Any]:
        base = dict((params.get(node) or {}).get("ros__parameters", {}))
        base.update(overrides.get(node, {}))
        return base

    # launch arguments -> node parameters
    task, dt = a["task"], 1.0 / a["control_hz"]
    per_node: dict[str, dict[str, Any]] = {
        "sim": {"task": task, "seed": a["seed"], "episodes": a["episodes"]},
        "camera_ingestion": {},
        "policy": {"task": task, "injected_latency_s": a["latency_ms"] / 1000.0},
        "scheduler": {"strategy": preset.strategy, "dt": dt, "request_ahead": a["request_ahead"]},
        "correction": {"rate_hz": a["command_hz"], "command_interface": a["command"]},
    }
    if preset.schedule is not None:  # the preset's RTC soft-mask schedule and guidance clip
        per_node["scheduler"]["rtc_schedule"] = preset.schedule
    if preset.beta is not None:
        # sent with every request (the flow backend applies it per request); also the policy's
        # load-time clip, for backends without a per-request one (lerobot, openpi)
        per_node["scheduler"]["guidance_beta"] = float(preset.beta)
        per_node["policy"]["guidance_beta"] = float(preset.beta)
    if not a["fifo"]:
        per_node["correction"]["sched_fifo_priority"] = 0
    if a["record"]:
        bag = Path(a["record"]).expanduser().resolve()
        if bag.exists():
            raise GraphError(
                f"record:={a['record']}: {bag} already exists (rosbag2 never overwrites): choose a new name"
            )
        per_node["recorder"] = {"output": str(bag), "stats_file": str(bag) + ".counts.json"}
    per_node["dashboard"] = {
        "port": a["dashboard_port"],
        "command_topic": N.FORWARD_COMMAND if a["command"] == "forward" else "",
        "trajectory_topic": N.TRAJECTORY_COMMAND if a["command"] == "trajectory" else "",
    }
    # policy spec (policy/registry.py): the shipped checkpoint is resolved here so the launch
    # parameters name the file; other specs go to the policy node as given
    if a["policy"] == "default":
        per_node["policy"].update(policy=_checkpoint(task, preset.checkpoint))
        if preset.uses_weak:  # BID's forward contrast with the shipped weak snapshot, if any
            try:
                per_node["policy"]["weak_checkpoint"] = _checkpoint(task, "base_weak")
            except GraphError:
                pass
    elif ":" in a["policy"] or _is_backend_name(a["policy"]):
        # a registered backend, NAME[:TARGET] or SCHEME://ADDRESS: refuse here a preset it cannot serve
        # (the same check as the policy node's load, without loading anything) so the launch fails with
        # one line instead of a policy node that exits after the graph has started; the preset's
        # checkpoint kind goes with it (the vla backend serves remac_clean from its REMAC folder)
        _check_backend_serves(a["policy"], preset)
        per_node["policy"].update(policy=a["policy"], checkpoint_kind=preset.checkpoint)
    else:
        if not Path(a["policy"]).expanduser().is_file():
            raise GraphError(f"policy:={a['policy']}: no such checkpoint file (or default, expert, NAME:TARGET)")
        per_node["policy"].update(policy=str(Path(a["policy"]).expanduser().resolve()))
    _cameras(a, preset, per_node)
    if a["instruction"]:
        per_node["camera_ingestion"]["instruction"] = a["instruction"]
    if preset.a2c2:
        _a2c2(a, preset, per_node)

    nodes = []
    for spec in graphs[name].get("nodes", []):
        if not _when_matches(spec.get("when") or {}, a):
            continue
        node = spec["name"]
        p = node_params(node)
        p.update(per_node.get(node, {}))
        remaps = tuple((str(s), str(d)) for s, d in (spec.get("remappings") or {}).items())
        nodes.append(NodeLaunch(node, spec["module"], spec["executable"], p, remaps, a["namespace"]))
    if not nodes:
        raise GraphError(f"graph {name!r} has no node for these arguments")
    if a["compose"]:
        nodes = _compose(graphs[name].get("nodes", []), nodes)
    return Graph(name, tuple(nodes), a)


def _compose(specs: Sequence[Mapping[str, Any]], nodes: list[NodeLaunch]) -> list[NodeLaunch]:
    """graph.yaml ``compose``: a node's ``hosts`` move into its process, which runs the container
    ``module`` / ``executable`` (only when every hosted node is in the graph)."""
    by_name = {n.name: n for n in nodes}
    for spec in specs:
        comp = spec.get("compose")
        if not comp or spec["name"] not in by_name:
            continue
        hosts = [str(h) for h in comp.get("hosts") or ()]
        missing = [h for h in hosts if h not in by_name]
        if not hosts or missing:
            continue
        if not comp.get("module") or not comp.get("executable"):
            raise GraphError(f"graph.yaml: `compose` of {spec['name']!r} needs module and executable")
        hosted = tuple(by_name.pop(h) for h in hosts)
        by_name[spec["name"]] = replace(
            by_name[spec["name"]], module=str(comp["module"]), executable=str(comp["executable"]), hosted=hosted
        )
    return [by_name[n.name] for n in nodes if n.name in by_name]


def _is_backend_name(policy: str) -> bool:
    from async_vla_ros.policy.registry import available_backends

    return policy in available_backends()


def _check_backend_serves(policy: str, preset: Any) -> None:
    from async_vla_ros.policy.registry import BackendError, get_backend, parse_policy_spec

    try:
        spec = parse_policy_spec(policy)
        if spec.backend == "flow" and spec.target and not Path(spec.target).expanduser().is_file():
            raise BackendError("no backend of that name and no such checkpoint file (backends: see --help)")
        why = get_backend(spec.backend).cannot_serve(preset, spec.target)
    except BackendError as exc:
        raise GraphError(f"policy:={policy}: {exc}") from exc
    if why:
        raise GraphError(f"policy:={policy} cannot serve method:={preset.name}: {why}")


def _a2c2(a: Mapping[str, Any], preset, per_node: dict[str, dict[str, Any]]) -> None:
    """The correction node's A2C2 head, by the registry's rule (``load_models``): ``a2c2:=default``
    is the policy backend's own head when it has one (the vla backend: ``vla_a2c2.pt``), else the
    task's ``<task>_a2c2.pt``; a path is taken as given. A head of another state width than the
    policy reads (the task's state head under a VLA) is refused here, in one line. A head that reads
    the policy's features (``latent_dim`` > 0), or a policy that reads only part of the state (a
    VLA: proprioception), has the correction node load the same policy spec and checkpoint kind as
    the policy node (``a2c2_policy``): it computes the features of every observation (its cameras
    and instruction) and checks at start that the head fits the policy (``check_head_fits``)."""
    from async_vla_ros.policy.registry import (
        BackendError,
        BackendRequest,
        checkpoint_file,
        get_backend,
        parse_policy_spec,
    )

    task, policy = a["task"], per_node["policy"]["policy"]
    kind = per_node["policy"].get("checkpoint_kind", preset.checkpoint)
    try:
        spec = parse_policy_spec(policy)
        backend = get_backend(spec.backend)
        req = BackendRequest(task, target=spec.target, kind=kind)
        if a["a2c2"] != "default":
            path = Path(a["a2c2"]).expanduser()
        elif backend.head_file is not None:
            path = backend.head_file(req)
        else:
            path = checkpoint_file(task, "a2c2")
        reads = backend.state_dim(req) if backend.state_dim is not None else None
    except BackendError as exc:
        raise GraphError(f"a2c2:={a['a2c2']} with policy:={a['policy']}: {exc}") from None
    if not path.is_file():
        raise GraphError(
            f"a2c2:={a['a2c2']}: no such A2C2 head file; train one for this policy (async-vla-ros train a2c2 "
            "--base ... --demos ..., docs/training.md) or use a2c2:=default"
        )
    from async_vla_ros.policy.a2c2 import CorrectionHead

    try:
        cfg = CorrectionHead.load(path).config
    except Exception as exc:  # noqa: BLE001 - torch's loader raises many kinds for a file that is not a head
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GraphError(f"a2c2:={a['a2c2']}: not an A2C2 head ({why})") from None
    if reads is not None and cfg.obs_dim != reads:
        raise GraphError(
            f"a2c2:={a['a2c2']} ({path.name}) takes a state of {cfg.obs_dim} values, policy:={a['policy']} reads "
            f"{reads}: give the head trained on this policy (async-vla-ros train a2c2 --base {a['policy']} ..., "
            "docs/training.md)"
        )
    per_node["correction"]["a2c2_head"] = str(path.resolve())
    if cfg.latent_dim or reads is not None:
        per_node["correction"].update(a2c2_policy=policy, a2c2_policy_kind=kind, task=task)


def _cameras(a: Mapping[str, Any], preset, per_node: dict[str, dict[str, Any]]) -> None:
    """The cameras of the graph: those the policy takes (read from its files: registry
    ``policy_cameras``), rendered by the sim at the policy's image size and ingested into every
    observation; none for a state policy, so it pays no rendering. ``cameras:=`` names them for a
    backend that cannot tell; a mismatch with the policy's is one error naming both sets."""
    from async_vla_ros.policy.registry import BackendError, BackendRequest, policy_cameras

    try:
        wanted = policy_cameras(per_node["policy"]["policy"], BackendRequest(a["task"], kind=preset.checkpoint))
    except BackendError as exc:
        raise GraphError(f"policy:={a['policy']}: {exc}") from None
    given = [c.strip() for c in a["cameras"].split(",") if c.strip()]
    if given and a["camera"] == "false":
        raise GraphError(f"cameras:={a['cameras']} with camera:=false: choose one")
    if len(set(given)) != len(given):
        raise GraphError(f"cameras:={a['cameras']}: duplicate names")
    if given and wanted is not None and set(given) != set(wanted):
        raise GraphError(f"camera names differ: cameras:= gives {sorted(given)}, the policy takes {sorted(wanted)}")
    if a["camera"] == "false":
        names = []
    else:
        names = given or list(wanted or {})
        if not names and a["camera"] == "true":
            names = ["scene"]
    # a previous frame (<camera>_prev, <camera>_prev<k>) is not a camera of its own: ingestion derives it from <camera>
    sources = list(dict.fromkeys(N.frame_source(c)[0] for c in names))
    if a["sim"] == "mujoco":
        bad = [c for c in sources if c not in N.CAMERAS]
        if bad:
            raise GraphError(f"the policy takes cameras {bad} the sim scene does not have (it has {list(N.CAMERAS)})")
    if not names:
        return  # the nodes' defaults: no camera rendered, none ingested
    per_node["sim"]["cameras"] = sources
    per_node["camera_ingestion"]["camera_names"] = list(names)
    dt = float(per_node["scheduler"]["dt"])
    if wanted:
        # a policy that takes cameras gets a frame every control period, as in its demonstrations
        # (the sim's 5 Hz default leaves frames up to 200 ms older than the state); a previous
        # frame is one control period back (<camera>_prev<k>: k periods)
        per_node["sim"]["camera_rate_hz"] = round(1.0 / dt, 6)
        per_node["camera_ingestion"]["prev_frame_offset_s"] = dt
    sizes = {tuple(hw) for c, hw in (wanted or {}).items() if c in names}
    if len(sizes) == 1 and len(set(next(iter(sizes)))) == 1:  # one square size: render it, no resampling
        side = int(next(iter(sizes))[0])
        per_node["sim"].update(image_width=side, image_height=side)
        per_node["camera_ingestion"]["image_size"] = side
    elif sizes:
        raise GraphError(f"the policy's cameras take sizes {sorted(sizes)}; the graph ingests one square size")
    if a["camera_size"]:
        if a["camera_size"] < 16:
            raise GraphError(f"camera_size:={a['camera_size']}: the sim renders 16 px or more (0: the policy's size)")
        # the sim renders at the driver resolution; ingestion resizes to the policy's size (set above)
        per_node["sim"].update(image_width=a["camera_size"], image_height=a["camera_size"])


def resolve_policy(task: str, method: str, policy: str = "default") -> tuple[str, str]:
    """``(policy launch value, note for the user)``: ``default`` when the task ships the preset's
    checkpoints, else the scripted expert with a note saying why (demo, bench record/pipeline)."""
    if policy == "state":
        policy = "default"
    if policy != "default":
        return policy, ""
    try:
        build_graph("franka", {"task": task, "method": method, "policy": "default", "camera": "false"})
        return "default", ""
    except GraphError as exc:
        return "expert", (
            f"note: {exc}.\n      Running the scripted expert as the chunk policy instead "
            "(the shipped checkpoints arrive with the training issue)."
        )
