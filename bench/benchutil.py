"""Helpers shared by the Python benchmarks (bench/*.py)."""


def cpu_model():
    """The CPU's `model name` from /proc/cpuinfo, the label every table carries."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"
