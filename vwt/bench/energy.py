"""Energy counters, read around each timed call: NVML on CUDA, Linux powercap RAPL on CPU, else nothing.

- CUDA: ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the driver loaded; Volta and newer)
  through ``pynvml``, only when it imports. Scope: the whole GPU.
- CPU: ``/sys/class/powercap/intel-rapl:N/energy_uj`` of every package zone (sub-zones and ``psys``
  overlap a package and are left out), microjoules, wrapping at ``max_energy_range_uj``. Scope: the
  whole CPU package, every process on it (a shared machine's other work is counted too).
- Otherwise a meter that is not ``available`` and says why; results then hold ``null``, never a guess.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

__all__ = ["EnergyMeter", "RaplMeter", "NvmlMeter", "UnavailableMeter", "open_energy_meter", "POWERCAP_ROOT"]

logger = logging.getLogger(__name__)

POWERCAP_ROOT = Path("/sys/class/powercap")


class EnergyMeter:
    """A monotonic energy counter: ``delta(read(), read())`` is joules in between."""

    #: Where the numbers come from (``"nvml"``, ``"rapl"``), or None.
    source: str | None = None
    #: What the counter covers.
    scope: str = ""
    #: Why there is no counter (None where there is one).
    reason: str | None = None

    @property
    def available(self) -> bool:
        return self.reason is None

    def read(self) -> Any:
        """The raw counter (opaque), or None where it cannot be read."""
        return None

    def delta(self, before: Any, after: Any) -> float | None:
        """Joules between two readings."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"available": self.available, "source": self.source, "scope": self.scope or None,
                "reason": self.reason}


class UnavailableMeter(EnergyMeter):
    """No counter; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class RaplMeter(EnergyMeter):
    """Linux powercap RAPL package zones, summed; wraparound handled per zone."""

    source = "rapl"
    scope = "CPU package energy (all processes on the package, not only this benchmark)"

    def __init__(self, zones: list[tuple[Path, int]]) -> None:
        self.zones = zones  # (energy_uj file, max_energy_range_uj)

    @classmethod
    def open(cls, root: str | Path = POWERCAP_ROOT) -> EnergyMeter:
        """A meter over every readable package zone under ``root``, or an :class:`UnavailableMeter`."""
        root = Path(root)
        candidates = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1) if root.is_dir() else []
        if not candidates:
            return UnavailableMeter(f"no RAPL powercap zones under {root} (not Linux, no intel_rapl driver, "
                                    "or hidden in this container)")
        zones, errors = [], []
        for zone in candidates:
            try:
                name = (zone / "name").read_text().strip() if (zone / "name").is_file() else zone.name
                if name == "psys":  # platform energy: overlaps the packages
                    continue
                int((zone / "energy_uj").read_text())
                zones.append((zone / "energy_uj", int((zone / "max_energy_range_uj").read_text())))
            except (OSError, ValueError) as err:
                errors.append(f"{zone.name}: {type(err).__name__}: {err}")
        if not zones:
            return UnavailableMeter("RAPL energy counters not readable (" + "; ".join(errors or ["no package zone"])
                                    + "); since Linux 5.10 energy_uj is readable by root only")
        return cls(zones)

    def read(self) -> tuple[int, ...] | None:
        try:
            return tuple(int(path.read_text()) for path, _ in self.zones)
        except (OSError, ValueError):
            return None

    def delta(self, before: tuple[int, ...], after: tuple[int, ...]) -> float:
        total = 0
        for (_, wrap), a, b in zip(self.zones, before, after):
            total += b - a if b >= a else b + wrap - a  # the counter wrapped at max_energy_range_uj
        return total * 1e-6


class NvmlMeter(EnergyMeter):
    """``nvmlDeviceGetTotalEnergyConsumption`` of the GPU that runs the benchmark."""

    source = "nvml"
    scope = "whole GPU board energy (every process on the GPU)"

    def __init__(self, pynvml: Any, handle: Any) -> None:
        self.pynvml = pynvml
        self.handle = handle

    @classmethod
    def open(cls, device: torch.device) -> EnergyMeter:
        try:
            import pynvml
        except ImportError:
            return UnavailableMeter("CUDA energy needs pynvml (pip install nvidia-ml-py), which is not installed")
        try:
            pynvml.nvmlInit()
            index = device.index if device.index is not None else torch.cuda.current_device()
            props = torch.cuda.get_device_properties(index)
            try:  # by PCI bus id: CUDA_VISIBLE_DEVICES renumbers devices, NVML does not
                bus_id = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
                handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus_id)
            except (AttributeError, pynvml.NVMLError):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except Exception as err:  # noqa: BLE001 - NVMLError_NotSupported, driver missing, ...
            return UnavailableMeter(f"NVML energy counter not available: {type(err).__name__}: {err}")
        return cls(pynvml, handle)

    def read(self) -> int | None:
        try:
            return int(self.pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception:  # noqa: BLE001
            return None

    def delta(self, before: int, after: int) -> float:
        return (after - before) * 1e-3


def open_energy_meter(device: torch.device | str, powercap_root: str | Path = POWERCAP_ROOT) -> EnergyMeter:
    """The energy counter for work on ``device``: NVML for CUDA, RAPL for CPU, else an unavailable meter."""
    device = torch.device(device)
    if device.type == "cuda":
        meter = NvmlMeter.open(device)
    elif device.type == "cpu":
        meter = RaplMeter.open(powercap_root)
    else:
        meter = UnavailableMeter(f"no energy counter for device type {device.type!r}")
    if not meter.available:
        logger.info("energy not measured: %s", meter.reason)
    return meter
