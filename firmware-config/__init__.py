"""Data for devices: sensor wire protocols, device profiles, systemd/udev/broker files."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent
