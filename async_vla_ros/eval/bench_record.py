"""``async-vla-ros bench record``: the recorder node inside the running graph loses no message.

Starts the default graph (MuJoCo sim, camera, policy, scheduler, correction at their default
rates) plus the recorder (``record:=DIR``) with the built-in launcher for ``--duration`` seconds,
stops it, and counts, per topic:

* what the recorder received, wrote and dropped (its own counts, ``<bag>.counts.json``), and what
  the bag holds (``metadata.yaml``);
* for the topics whose publisher numbers its messages (``/observation`` obs_id,
  ``/policy/chunk_request`` request_id, ``/policy/action_chunk`` chunk_id,
  ``/scheduler/action_plan`` plan_id, ``/correction/command_metrics`` tick), the publisher's count
  over the recorded span (last id - first id + 1) against the distinct ids in the bag: a
  message lost anywhere between the publisher and the bag is a missing id.

Messages published before the recorder's subscriptions matched, or after it stopped, are outside
the recorded span and not counted as lost. Exit status 0 when nothing was lost, 1 otherwise.

:func:`check_recording` is the analysis, reused by the system test and by ``demo --record``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from async_vla_ros import names as N

__all__ = ["SEQUENCED", "TopicCount", "RecordCheck", "check_recording", "add_arguments", "run"]

# topic -> field numbered by its publisher, +1 per message
SEQUENCED: dict[str, str] = {
    N.absolute(N.OBSERVATION): "obs_id",
    N.absolute(N.CHUNK_REQUEST): "request_id",
    N.absolute(N.ACTION_CHUNK): "chunk_id",
    N.absolute(N.ACTION_PLAN): "plan_id",
    N.absolute(N.COMMAND_METRICS): "tick",
}


@dataclass(frozen=True)
class TopicCount:
    """Counts of one topic (-1: not applicable / unknown)."""

    topic: str
    in_bag: int  # messages in the bag (metadata)
    received: int  # recorder callbacks
    written: int  # written by the recorder's writer thread
    dropped: int  # recorder queue full
    rate_hz: float  # in_bag / bag duration
    published: int = -1  # publisher's count over the recorded span (sequenced topics)
    missing: int = -1  # published ids absent from the bag
    duplicates: int = -1  # ids recorded twice

    @property
    def lost(self) -> int:
        return max(0, self.dropped) + max(0, self.missing) + max(0, self.received - self.written)


@dataclass(frozen=True)
class RecordCheck:
    bag: str
    duration_s: float
    topics: tuple[TopicCount, ...] = field(default_factory=tuple)

    @property
    def total_in_bag(self) -> int:
        return sum(t.in_bag for t in self.topics)

    @property
    def total_lost(self) -> int:
        return sum(t.lost for t in self.topics)

    def table(self) -> str:
        head = f"{'topic':<40} {'in bag':>8} {'Hz':>7} {'recv':>8} {'written':>8} {'dropped':>7} {'published':>9} {'missing':>7}"
        rows = [head, "-" * len(head)]
        for t in self.topics:
            pub = str(t.published) if t.published >= 0 else "-"
            miss = str(t.missing) if t.missing >= 0 else "-"
            rows.append(
                f"{t.topic:<40} {t.in_bag:>8} {t.rate_hz:>7.1f} {t.received:>8} {t.written:>8} {t.dropped:>7} "
                f"{pub:>9} {miss:>7}"
            )
        rows.append(f"total: {self.total_in_bag} messages in {self.duration_s:.1f} s, lost {self.total_lost}")
        return "\n".join(rows)

    def as_dict(self) -> dict:
        return {
            "bag": self.bag,
            "duration_s": self.duration_s,
            "total_in_bag": self.total_in_bag,
            "total_lost": self.total_lost,
            "topics": {
                t.topic: {
                    k: getattr(t, k)
                    for k in (
                        "in_bag",
                        "rate_hz",
                        "received",
                        "written",
                        "dropped",
                        "published",
                        "missing",
                        "duplicates",
                    )
                }
                for t in self.topics
            },
        }


def check_recording(bag: str | Path, counts_file: str | Path | None = None) -> RecordCheck:
    """Counts of a bag written by the recorder node (see the module docstring). ``counts_file``:
    the recorder's ``stats_file`` JSON (default ``<bag>.counts.json``)."""
    from async_vla_ros.bags import BagError, bag_info, read_messages

    bag = Path(bag)
    info = bag_info(bag)
    cf = Path(counts_file) if counts_file is not None else Path(str(bag) + ".counts.json")
    if not cf.is_file():
        raise BagError(f"recorder counts {cf} not found (the recorder writes them on a clean shutdown)")
    rec = json.loads(cf.read_text())["topics"]
    duration = max(info.duration_s, 1e-9)
    out = []
    for topic in sorted(set(info.counts) | set(rec)):
        n = int(info.counts.get(topic, 0))
        r = rec.get(topic, {})
        published = missing = dups = -1
        if topic in SEQUENCED and n:
            key = SEQUENCED[topic]
            ids = [int(getattr(m.msg, key)) for m in read_messages(bag, [topic])]
            uniq = set(ids)
            published = max(uniq) - min(uniq) + 1
            missing = published - len(uniq)
            dups = len(ids) - len(uniq)
        out.append(
            TopicCount(
                topic,
                n,
                int(r.get("received", 0)),
                int(r.get("written", 0)),
                int(r.get("dropped", 0)),
                n / duration,
                published,
                missing,
                dups,
            )
        )
    return RecordCheck(str(bag), info.duration_s, tuple(out))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=600.0, help="seconds to run the graph (default: 600)")
    parser.add_argument(
        "--policy",
        default="default",
        help="default (shipped checkpoint, else the scripted expert), expert, or a checkpoint path",
    )
    parser.add_argument("--task", default="track", help="task (default: track)")
    parser.add_argument("--method", default="rtc", help="method preset (default: rtc)")
    parser.add_argument(
        "--bag", default=None, help="bag directory to write (default: a temp folder, removed unless --keep)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the bag")
    parser.add_argument("--json", default=None, help="also write the counts here as JSON")


def run(ns: argparse.Namespace) -> int:
    from async_vla_ros.bringup.graph import GraphError, build_graph, resolve_policy
    from async_vla_ros.bringup.launcher import Launcher

    if ns.duration <= 0:
        print("bench record: --duration must be > 0", file=sys.stderr)
        return 2
    tmp = None
    if ns.bag is None:
        tmp = Path(tempfile.mkdtemp(prefix="async_vla_ros_record_"))
        bag = tmp / "bag"
    else:
        bag = Path(ns.bag).expanduser().resolve()
    policy, note = resolve_policy(ns.task, ns.method, ns.policy)
    if note:
        print(note)
    try:
        graph = build_graph("franka", {"task": ns.task, "method": ns.method, "policy": policy, "record": str(bag)})
    except GraphError as exc:
        print(f"bench record: {exc}", file=sys.stderr)
        return 2
    log = (tmp or bag.parent) / (bag.name + ".nodes.log")
    print(
        f"bench record: {ns.duration:.0f} s of the default graph ({policy} policy, {ns.method}) recorded into {bag}; "
        f"node logs: {log}",
        flush=True,
    )
    with open(log, "w", buffering=1) as f:
        launcher = Launcher(graph, echo=lambda line: f.write(line + "\n"))
        t0 = time.monotonic()
        rc = launcher.run(ns.duration)
        elapsed = time.monotonic() - t0
    if rc != 0 or launcher.failed:
        print(f"bench record: a node died ({launcher.failed}); see {log}", file=sys.stderr)
        return 1
    check = check_recording(bag)
    print(f"graph ran {elapsed:.1f} s; bag spans {check.duration_s:.1f} s")
    print(check.table())
    if ns.json:
        Path(ns.json).write_text(json.dumps(check.as_dict(), indent=1))
    if tmp is not None and not ns.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print("no message lost" if check.total_lost == 0 else f"LOST {check.total_lost} message(s)")
    return 0 if check.total_lost == 0 else 1
