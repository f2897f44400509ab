"""Default checkpoints shipped with the package (trained by `async-vla-ros train ...`, see docs/training.md).

Files (flat, so setup.py's ``package_data`` globs ``checkpoints/*.pt`` / ``*.json`` pick them up):

* ``<task>_base.pt``        base flow policy (behaviour cloning), ``load_policy`` loads it,
* ``<task>_base_weak.pt``   an early snapshot of the same run (BID's weak policy for forward contrast),
* ``<task>_remac.pt``       REMAC as its authors train it: base + mask-gated adapters (``remac`` sampler),
* ``<task>_remac_clean.pt`` our earlier REMAC reading, LoRA merged (``prefix`` sampler); docs/remac.md,
* ``<task>_a2c2.pt``        A2C2 correction head trained on the base policy's chunks,
* ``<task>_remac_nomask.pt`` / ``_nocurriculum.pt`` / ``_nodelta.pt``  ablations of ``remac``,
* ``<task>_remac_clean_nomask.pt`` / ``_nocurriculum.pt`` / ``_noalign.pt``  ablations of ``remac_clean``
  (where trained),
* ``manifest.json``         the commands, seeds and measured numbers of every file.

Each checkpoint carries its full training config (``train_config``: network, normaliser, task,
obs/action layout, H, seed, git commit, demonstrations path and count).
"""

from __future__ import annotations

from pathlib import Path

KINDS = (
    "base",
    "base_weak",
    "remac",
    "remac_clean",
    "a2c2",
    "remac_nomask",
    "remac_nocurriculum",
    "remac_nodelta",
    "remac_clean_nomask",
    "remac_clean_nocurriculum",
    "remac_clean_noalign",
)
DIR = Path(__file__).resolve().parent


def checkpoint_path(task: str, kind: str = "base", directory: str | Path | None = None) -> Path:
    """Path of a checkpoint file ``<directory>/<task>_<kind>.pt`` (default: the shipped folder).

    Raises ``ValueError`` for an unknown kind and ``FileNotFoundError`` (with the command that
    makes it) when the file is missing.
    """
    if kind not in KINDS:
        import difflib

        close = difflib.get_close_matches(kind, KINDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown checkpoint kind {kind!r}{hint}; known: {', '.join(KINDS)}")
    path = (Path(directory) if directory is not None else DIR) / f"{task}_{kind}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; train it as described in docs/training.md")
    return path


def available(directory: str | Path | None = None) -> dict[str, list[str]]:
    """``{task: [kinds present]}`` in ``directory`` (default: the shipped folder)."""
    root = Path(directory) if directory is not None else DIR
    out: dict[str, list[str]] = {}
    for p in sorted(root.glob("*.pt")):
        for kind in sorted(KINDS, key=len, reverse=True):
            if p.stem.endswith("_" + kind):
                out.setdefault(p.stem[: -len(kind) - 1], []).append(kind)
                break
    return out
