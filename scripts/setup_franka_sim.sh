#!/usr/bin/env bash
# Create (idempotently) the separate virtual environment that runs the franka-sim server.
#
# franka-sim (PyPI, Apache-2.0) speaks the real libfranka network protocol over MuJoCo, but pins
# numpy==1.26.4 and mujoco<3.3, which clash with the main .venv (numpy 2, mujoco 4). So it lives
# in its own venv, by default outside the work tree:
#     ${FRANKA_SIM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/async_vla_ros/franka-sim-venv}
# A stamp holding a hash of the pinned package list makes a second run take well under a second.
# Prints the venv's path as its last line of stdout (callers read it); logs go to stderr.
#
# The server it provides is started by async_vla_ros.robot.franka_sim (tests, `async-vla-ros
# bench franka`), bound to 127.0.0.1 only.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
VENV="${FRANKA_SIM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/async_vla_ros/franka-sim-venv}"
# Pinned set (franka-sim's own pins: numpy==1.26.4, 3.2 <= mujoco < 3.3).
PKGS=(
  "franka-sim==1.1.7"
  "numpy==1.26.4"
  "mujoco==3.2.7"
  "trimesh==4.12.2"
  "robot_descriptions==1.23.0"
)
STAMP="$VENV/.async_vla_ros_stamp"
want="$(printf '%s\n' "${PKGS[@]}" | sha256sum | cut -c1-16)"

log() { printf '[setup_franka_sim] %s\n' "$*" >&2; }

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/python" ]]; then
  echo "$VENV"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
fi
log "installing ${PKGS[*]} (about a minute) ..."
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PKGS[@]}" 2>&1 \
  | grep -v "^WARNING: Location" >&2 || true
# fail loudly if the install did not work
"$VENV/bin/python" -c "import franka_sim, mujoco, numpy; assert numpy.__version__ == '1.26.4', numpy.__version__" >&2
echo "$want" >"$STAMP"
log "ready: $VENV"
echo "$VENV"
