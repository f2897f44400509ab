"""async_vla_ros: real-time action chunking (RTC, REMAC, A2C2 and baselines) for Franka arms on ROS 2."""

from async_vla_ros.hfenv import apply_hf_offline as _apply_hf_offline

# before any entry point can import huggingface_hub / transformers / lerobot (hfenv.py)
_apply_hf_offline()

__version__ = "0.1.0"
