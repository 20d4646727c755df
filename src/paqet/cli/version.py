import platform

import paqet


def run() -> int:
    rows = [("Version:", f"v{paqet.__version__} (Python; wire-compatible with {paqet.UPSTREAM_VERSION})"),
            ("Git Tag:", "unknown"), ("Git Commit:", "unknown"), ("Build Time:", "unknown"),
            ("Python:", platform.python_version()),
            ("Platform:", f"{platform.system().lower()}/{platform.machine()}")]
    for label, value in rows:
        print(f"{label:<12}{value}")
    return 0
