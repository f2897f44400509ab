#!/usr/bin/env bash
# Set up everything async_vla_ros needs, idempotently (a second run takes seconds):
#   1. Debian packages for headless rendering and browser tests (only if missing),
#   2. .venv with the pinned Python stack (ROS 2 Kilted wheels, torch CPU, MuJoCo, ...),
#   3. the CMake path fix for the ROS wheels,
#   4. async_vla_msgs built with CMake and installed into the venv,
#   5. async_vla_ros installed (editable),
#   6. the venv laid out as its install space (share/async_vla_ros, lib/async_vla_ros, ament index),
#   7. the ROS 2 launch system and CLI (`ros2 launch|node|topic|param|...`) from source, when the
#      sources are there: ROS2_TOOLS_SRC names the folder (default ../shared/third_party/ros2),
#   8. the MuJoCo Menagerie Panda model in the cache.
# Each step keeps a stamp holding a hash of its inputs in .venv/.stamps and is skipped when
# the inputs are unchanged (step 6 is cheap and always runs, so new launch/config files appear).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
STAMPS="$VENV/.stamps"
PYTHON="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*"; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
stamp_ok() { [[ -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
stamp_set() { mkdir -p "$STAMPS"; echo "$2" >"$STAMPS/$1"; }

# 1. Debian packages -------------------------------------------------------------------------
APT_PKGS=(libosmesa6 libegl1 libgl1 libglx-mesa0 chromium chromium-driver)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
    log "WARNING: missing Debian packages (${missing[*]}) and no root: headless rendering/browser tests will be skipped"
  else
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    log "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# 2. venv + pinned Python stack ----------------------------------------------------------------
if [[ ! -x "$PY" ]]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
h=$(hash_of requirements.txt requirements.lock)
if ! stamp_ok pip "$h"; then
  log "installing Python packages (requirements.txt pinned by requirements.lock) ..."
  "$PY" -m pip install -q --upgrade pip wheel "setuptools==79.0.1" 2>&1 | grep -v "^WARNING: Location" || true
  "$PY" -m pip install -q -r requirements.txt -c requirements.lock 2>&1 | grep -v "^WARNING: Location" || true
  "$PY" -c "import rclpy, torch, mujoco, mink, peft, rosbags" # fail loudly if the install did not work
  stamp_set pip "$h"
  rm -f "$STAMPS/msgs" "$STAMPS/cmakefix" "$STAMPS/ros2tools" "$STAMPS/nodeps" "$STAMPS/openpi"
fi

# 2b. LeRobot without its torch<2.11 pin (i12: requirements-nodeps.txt says why) -------------------
h=$(hash_of requirements-nodeps.txt requirements.lock)
if ! stamp_ok nodeps "$h"; then
  "$PY" -m pip install -q --no-deps -r requirements-nodeps.txt -c requirements.lock 2>&1 | grep -v "^WARNING: Location" || true
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$PY" -c "import lerobot.policies.smolvla.modeling_smolvla" # fail loudly if it does not import
  stamp_set nodeps "$h"
fi

# 3. CMake path fix for the ROS wheels -------------------------------------------------------------
h=$(hash_of requirements.lock scripts/fix_wheel_cmake_paths.py)
if ! stamp_ok cmakefix "$h"; then
  "$PY" scripts/fix_wheel_cmake_paths.py "$VENV"
  stamp_set cmakefix "$h"
fi

# 3b. openpi client/server without their numpy<2 pin (requirements-openpi.txt says why) ----------
h=$(hash_of requirements-openpi.txt)
if ! stamp_ok openpi "$h" || ! "$PY" -c "import openpi_client, openpi_server, msgpack, websockets" 2>/dev/null; then
  "$PY" -m pip install -q --no-deps -r requirements-openpi.txt 2>&1 | grep -v "^WARNING: Location" || true
  "$PY" -c "import openpi_client.websocket_client_policy, openpi_server.websocket_policy_server" # fail loudly
  stamp_set openpi "$h"
fi

# 4. async_vla_msgs ---------------------------------------------------------------------------
h=$(hash_of msg/*.msg msg/CMakeLists.txt msg/package.xml requirements.lock)
if ! stamp_ok msgs "$h" || [[ ! -d "$VENV/share/async_vla_msgs" ]]; then
  log "building async_vla_msgs (CMake, ~30 s) ..."
  rm -rf build/msgs && mkdir -p build
  export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
  {
    cmake -S msg -B build/msgs -DPython3_EXECUTABLE="$PY" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF &&
      cmake --build build/msgs -j"$(nproc)" &&
      cmake --install build/msgs --prefix "$VENV"
  } >build/msgs.log 2>&1 || { tail -40 build/msgs.log; log "message build failed (full log: build/msgs.log)"; exit 1; }
  stamp_set msgs "$h"
fi

# 5. async_vla_ros (editable) + share files -------------------------------------------------------
h=$(hash_of setup.py setup.cfg pyproject.toml package.xml)
if ! stamp_ok pkg "$h" || ! "$PY" -c "import async_vla_ros" 2>/dev/null; then
  log "installing async_vla_ros (editable) ..."
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -E "^(ERROR|error)" || true
  stamp_set pkg "$h"
fi

# 6. install-space layout -------------------------------------------------------------------------
# An editable install skips data_files and install_scripts: lay out what colcon would install
# (ament index marker, share/ with per-file links to launch/ and config/, lib/async_vla_ros/
# executables) so `ros2 launch async_vla_ros franka.launch.py` works and repo edits take effect.
"$PY" scripts/install_space.py "$VENV"

# 7. ROS 2 launch system and CLI from source -------------------------------------------------------
ROS2_DEFAULT="$ROOT/../shared/third_party/ros2"
if [[ -n "${ROS2_TOOLS_SRC:-}" ]]; then
  [[ -f "$ROS2_TOOLS_SRC/install.sh" ]] || { log "ROS2_TOOLS_SRC=$ROS2_TOOLS_SRC has no install.sh"; exit 1; }
  ros2_src="$ROS2_TOOLS_SRC"
elif [[ -f "$ROS2_DEFAULT/install.sh" ]]; then
  ros2_src="$ROS2_DEFAULT"
else
  ros2_src=""
  log "ROS 2 launch/CLI tools skipped: no sources (set ROS2_TOOLS_SRC or provide ../shared/third_party/ros2)"
fi
if [[ -n "$ros2_src" ]]; then
  h=$( (cd "$ros2_src" && find . -type f -not -path '*/.git/*' -print0 | LC_ALL=C sort -z | xargs -0 cat) | sha256sum | cut -c1-16)
  if ! stamp_ok ros2tools "$h" || [[ ! -x "$VENV/bin/ros2" ]]; then
    log "installing the ROS 2 launch system and CLI from $ros2_src (~1 min) ..."
    mkdir -p build
    bash "$ros2_src/install.sh" "$VENV" >build/ros2tools.log 2>&1 ||
      { tail -30 build/ros2tools.log; log "ROS 2 tools install failed (full log: build/ros2tools.log)"; exit 1; }
    stamp_set ros2tools "$h"
    log "$(tail -1 build/ros2tools.log)"
  fi
fi

# 8. MuJoCo Menagerie Panda ----------------------------------------------------------------------
"$PY" -m async_vla_ros.assets >/dev/null

log "ready: $VENV ($("$PY" -c 'import torch, mujoco, rclpy; print(f"torch {torch.__version__}, mujoco {mujoco.__version__}")'))"
