"""async_vla_ros: real-time action chunking (RTC, REMAC, A2C2 and baselines) for Franka arms on ROS 2."""

__version__ = "0.1.0"
