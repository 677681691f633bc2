"""Free loopback ports for the servers a test starts (Ray's GCS, dashboard, metrics export)."""

import socket
from typing import List


def free_ports(n: int) -> List[int]:
    """`n` distinct ports, all bound at once so that none is handed out twice, then released."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]
